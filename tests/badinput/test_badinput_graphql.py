"""The catalogue against PostgreSQL: the selector's loader stores hostile strings verbatim,
and the GraphQL API answers hostile arguments and queries with errors, never with a crash or
a dropped table."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from sqlalchemy import Engine, create_engine, text

from tests.badinput.catalogue import Case, cases
from tests.badinput.conftest import free_port, serve
from tests.badinput.support import SOURCE, param, pipeline

pytestmark = pytest.mark.integration


@dataclass
class Database:
    url: str
    engine: Engine


def fresh_database(postgres_url: str) -> Iterator[Database]:
    """A fresh schema migrated by the selector (``hosepipe db upgrade``)."""
    import uuid

    from selector.schema import upgrade

    schema = f"badinput_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in postgres_url else "?"
    url = f"{postgres_url}{sep}options={quote(f'-csearch_path={schema}')}"
    engine = create_engine(url)
    upgrade(engine, pipeline().selection)
    try:
        yield Database(url, engine)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="module")
def database(postgres_url: str) -> Iterator[Database]:
    yield from fresh_database(postgres_url)


@pytest.fixture(scope="module")
def api_database(postgres_url: str) -> Iterator[Database]:
    """The API's own schema: hostile filters must match nothing there."""
    yield from fresh_database(postgres_url)


def event(event_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": event_id,
        "source": SOURCE,
        "event_type": "clicked",
        "occurred_at": 1_767_225_600_000_000,
        "ingested_at": 1_767_225_601_000_000,
        "subject": "u1",
        "payload": "{}",
        "attributes": {},
    }
    base.update(fields)
    return base


def load(database: Database, rows: list[dict[str, Any]], name: str) -> Any:
    """Load canonical events as the selector does (one lake file, one transaction)."""
    import pyarrow as pa

    from hosepipe.lake import canonical_arrow_schema
    from selector.load import Loader
    from selector.plan import LakeFile

    table = pa.Table.from_pylist(rows, schema=canonical_arrow_schema())
    loader = Loader(database.engine, pipeline().selection)
    return loader.load([(LakeFile(f"dt=2026-01-01/hour=00/{name}.parquet", 1), table)])


def stored(database: Database, event_id: str) -> Any:
    with database.engine.connect() as conn:
        return conn.execute(
            text("SELECT * FROM events WHERE event_id = :i"), {"i": event_id}
        ).one_or_none()


def strings_rows(case: Case) -> list[dict[str, Any]]:
    rows = []
    for i, value in enumerate(case.value()["strings"]):
        rows.append(
            event(
                f"{case.name}-{i}-{value}",
                event_type=value,
                subject=value,
                payload=orjson.dumps({"s": value, value: [value]}).decode(),
                attributes={"a": value, value: "k"},
            )
        )
    return rows


@pytest.mark.parametrize("case", [param(c) for c in cases("postgres")])
def test_postgres(case: Case, database: Database) -> None:
    good = event(f"good-{case.name}")
    if case.expect == "verbatim":
        rows = strings_rows(case)
    else:
        rows = [event(**{"event_id": f"bad-{case.name}", **case.value()})]
    result = load(database, [*rows, good], case.name)
    assert stored(database, good["event_id"]) is not None, "the good event was not loaded"
    if case.expect == "verbatim":
        for row in rows:
            got = stored(database, row["event_id"])
            assert got is not None, row["event_id"]
            assert (got.event_type, got.subject) == (row["event_type"], row["subject"])
            assert got.payload == orjson.loads(row["payload"])
            assert got.attributes == row["attributes"]
    else:
        kind, _, detail = case.expect.partition(" ")
        assert kind == "rejected"
        # PostgreSQL text cannot hold a NUL: rejected_rows names such an id with "\u0000".
        event_id = rows[0]["event_id"].replace("\x00", "\\u0000")
        with database.engine.connect() as conn:
            rejected = conn.execute(
                text("SELECT rule, reason, file FROM rejected_rows WHERE event_id = :i"),
                {"i": event_id},
            ).all()
            loaded = conn.execute(
                text("SELECT count(*) FROM events WHERE event_id = :i"), {"i": event_id}
            ).scalar()
        assert rejected, "the bad event is neither loaded nor in rejected_rows"
        assert loaded == 0
        [(rule, reason, file)] = rejected
        assert rule == "events" and detail in reason, reason
        assert file and file.endswith(f"{case.name}.parquet")
        assert result.rejected == {"events": 1} and result.events == 1
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('events')")).scalar() is not None


# --------------------------------------------------------------------------- GraphQL


@pytest.fixture(scope="module")
def api_url(api_database: Database) -> Iterator[str]:
    from api.app import build_state, create_app
    from hosepipe.settings import Settings

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=api_database.url,
        bind_host="127.0.0.1",
        api_port=free_port(),
    )
    load(api_database, [event("seed-1"), event("seed-2", subject="other")], "seed")
    app = create_app(build_state(settings, pipeline(), pool_size=2))
    yield from serve(app, settings.api_port)


def post(api_url: str, request: dict[str, Any]) -> httpx.Response:
    if "raw" in request:
        return httpx.post(
            f"{api_url}/graphql",
            content=request["raw"],
            headers={"content-type": "application/json"},
            timeout=60,
        )
    return httpx.post(f"{api_url}/graphql", json=request, timeout=60)


@pytest.mark.parametrize("case", [param(c) for c in cases("graphql")])
def test_graphql(case: Case, api_url: str, api_database: Database) -> None:
    response = post(api_url, case.value())
    kind, _, detail = case.expect.partition(" ")
    if kind == "error" and detail.isdigit():
        assert response.status_code == int(detail), response.text[:300]
    else:
        assert response.status_code in {200, 400}, response.text[:300]
        body = response.json()
        if kind == "error":
            assert body.get("errors"), body
            assert detail in body["errors"][0]["message"], body["errors"][0]["message"][:300]
            assert "Traceback" not in response.text
        elif kind == "empty":
            assert not body.get("errors"), body["errors"]
            connection = body["data"]["events"]
            assert connection["edges"] == [] and connection["totalCount"] == 0
        else:
            assert kind == "null"
            assert not body.get("errors") and body["data"]["event"] is None
    # The server keeps serving and the table is still there with its rows.
    after = post(api_url, {"query": "{ events(first: 5) { totalCount } }"})
    assert after.status_code == 200 and after.json()["data"]["events"]["totalCount"] >= 2
    with api_database.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events")).scalar() == 2
