"""eventAdded end to end: a real ``hosepipe select`` process loads a lake file, the API pushes it.

No hand-written NOTIFY here: the lake file is written with :mod:`hosepipe.lake`'s helpers into a
``file://`` lake, the selector runs as a child process against the test's database schema, and
its ``NOTIFY hosepipe_events`` after the commit is what wakes the subscription.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport

from hosepipe.lake import data_file_key, events_to_table, parquet_bytes, partition_path
from tests.integration.api.api_support import PIPELINE, ApiDatabase, RunningApi, make_event
from tests.integration.api.test_api_live import wait_listening

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
SUBSCRIPTION = """subscription { eventAdded(filter: {source: "orders"}) {
  eventId source eventType payload } }"""


def canonical(row: dict[str, Any]) -> dict[str, Any]:
    """An api_support event as the lake stores it (µs timestamps, payload as JSON text)."""
    import orjson

    def micros(value: Any) -> int:
        return int(value.timestamp()) * 1_000_000 + value.microsecond

    return {
        **row,
        "occurred_at": micros(row["occurred_at"]),
        "ingested_at": micros(row["ingested_at"]),
        "payload": orjson.dumps(row["payload"]).decode(),
        "attributes": row["attributes"],
    }


def write_lake_file(lake: Path, rows: list[dict[str, Any]], first_offset: int) -> Path:
    events = [canonical(r) for r in rows]
    key = data_file_key(partition_path(events[0]), "events.canonical", 0, first_offset)
    path = lake / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(parquet_bytes(events_to_table(events)))
    return path


def run_selector(api_db: ApiDatabase, lake: Path, config: Path) -> str:
    env = {
        **os.environ,
        "HOSEPIPE_CONFIG_FILE": str(config),
        "HOSEPIPE_DATABASE_URL": api_db.url,
        "HOSEPIPE_LAKE_URL": lake.as_uri(),
    }
    done = subprocess.run(
        [sys.executable, "-m", "hosepipe", "select", "--no-progress"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_subscription_receives_events_loaded_by_the_selector_process(
    api: RunningApi, api_db: ApiDatabase, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    config = tmp_path / "hosepipe.yaml"
    config.write_text(yaml.safe_dump(PIPELINE))
    # Loaded before anyone subscribed: never delivered.
    write_lake_file(lake, [make_event(i) for i in range(4)], first_offset=0)
    await asyncio.to_thread(run_selector, api_db, lake, config)

    transport = WebsocketsTransport(
        url=api.ws, subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL]
    )
    async with Client(transport=transport) as session:
        received: list[dict[str, Any]] = []

        async def consume() -> None:
            async for result in session.subscribe(gql(SUBSCRIPTION)):
                received.append(result["eventAdded"])
                if len(received) == 2:
                    return

        task = asyncio.create_task(consume())
        await wait_listening(api)
        new = [make_event(i, event_id=f"sel{i}") for i in range(100, 104)]  # 2 orders, 2 clicks
        write_lake_file(lake, new, first_offset=4)
        out = await asyncio.to_thread(run_selector, api_db, lake, config)
        assert "loaded 1 file(s)" in out, out
        await asyncio.wait_for(task, timeout=20)
    assert sorted(r["eventId"] for r in received) == ["sel100", "sel102"]
    assert all(r["source"] == "orders" for r in received)
    assert {r["payload"]["id"] for r in received} == {"o100", "o102"}
