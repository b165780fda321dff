"""Pollers against real servers: an HTTP API the test serves, S3 files, PostgreSQL."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import orjson
import pytest
import sqlalchemy as sa

from connectors.pull.runner import PollHealth, poll_sources
from hosepipe.config import PipelineConfig
from hosepipe.observability import serve_metrics
from hosepipe.settings import Settings
from hosepipe.topics import ensure_topics

pytestmark = pytest.mark.integration

MAPPING = {"event_id": "$.id", "occurred_at": "$.ts", "event_type": {"const": "t"}}


@dataclass
class FakeApi:
    """A paginated JSON API: cursor = offset, filter by updated_since, 10 per page."""

    items: list[dict[str, Any]] = field(default_factory=list)
    throttle_first: bool = False
    fail_after: int | None = None  # answer 500 once this many pages were served
    log: list[tuple[float, int, dict[str, str]]] = field(default_factory=list)
    served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            if self.throttle_first and not self.log:
                self.log.append((time.monotonic(), 429, query))
                return 429, {"Retry-After": "1"}, b"slow down"
            if self.fail_after is not None and self.served >= self.fail_after:
                self.log.append((time.monotonic(), 500, query))
                return 500, {}, b"broken"
            since = int(query.get("updated_since", -1))
            selected = sorted(
                (i for i in self.items if i["updated_at"] > since), key=lambda i: i["updated_at"]
            )
            offset = int(query.get("cursor", 0))
            page = selected[offset : offset + 10]
            more = offset + 10 < len(selected)
            self.served += 1
            self.log.append((time.monotonic(), 200, query))
            body = {"items": page, "next_cursor": str(offset + 10) if more else None}
            return 200, {}, orjson.dumps(body)


@pytest.fixture
def fake_api() -> Iterator[tuple[FakeApi, str]]:
    api = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
            status, headers, body = api.answer(query)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api, f"http://127.0.0.1:{server.server_address[1]}/items"
    finally:
        server.shutdown()
        server.server_close()


class Running:
    """poll_sources in the test's loop, stopped on exit; cursors in ``topics.cursors``."""

    def __init__(self, settings: Settings, pipeline: PipelineConfig, cursor_topic: str) -> None:
        self.stop = asyncio.Event()
        self.health = PollHealth()
        topics = pipeline.topics.model_copy(update={"cursors": cursor_topic})
        configured = pipeline.model_copy(update={"topics": topics})
        self.task = asyncio.create_task(
            poll_sources(settings, configured, self.stop, health=self.health)
        )

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


async def count_until(
    kit, settings: Settings, topic: str, expected: int, timeout: float = 30
) -> list:
    return await asyncio.to_thread(
        kit.read_topic, settings.kafka_bootstrap, topic, expected, timeout
    )


def pull_pipeline(kit, unique: str, pull: dict[str, Any], key_path: str = "$.id") -> PipelineConfig:
    return kit.make_pipeline(
        unique,
        {"feed": {"kind": "pull", "key_path": key_path, "mapping": MAPPING, "pull": pull}},
    )


async def test_http_poller_pages_backs_off_and_goes_incremental(
    kit, settings: Settings, unique_name, fake_api: tuple[FakeApi, str]
) -> None:
    api, url = fake_api
    api.items = [{"id": f"i{n}", "updated_at": n} for n in range(1, 26)]
    api.throttle_first = True
    pipeline = pull_pipeline(
        kit,
        unique_name("http"),
        {
            "type": "http",
            "url": url,
            "interval": "0.5s",
            "records_path": "$.items",
            "pagination": {"kind": "cursor", "cursor_path": "$.next_cursor"},
            "incremental_param": "updated_since",
            "incremental_path": "$.updated_at",
        },
    )
    ensure_topics(settings, pipeline)
    topic = pipeline.raw_topic("feed")
    running = Running(settings, pipeline, unique_name("cursors"))
    try:
        first = await count_until(kit, settings, topic, 25)
        assert len(first) == 25
        statuses = [status for _, status, _ in api.log]
        assert statuses[0] == 429 and statuses[1] == 200
        assert api.log[1][0] - api.log[0][0] >= 0.9  # Retry-After: 1 was honoured
        assert [q.get("cursor") for _, s, q in api.log[1:4]] == [None, "10", "20"]
        with api.lock:
            api.items += [{"id": f"i{n}", "updated_at": n} for n in range(26, 31)]
        both = await count_until(kit, settings, topic, 30)
        server = serve_metrics("127.0.0.1", 0, running.health)
        try:
            async with httpx.AsyncClient() as client:
                reply = await client.get(f"http://127.0.0.1:{server.port}/healthz")
        finally:
            server.stop()
        assert reply.status_code == 200
        feed = reply.json()["pollers"]["feed"]
        assert feed["state"] == "ok" and feed["sweeps"] >= 1 and feed["last_error"] is None
    finally:
        await running.close()
    assert running.health()["ok"] is False  # the loop ended: 503 from now on
    assert sorted(m.key().decode() for m in both) == sorted(f"i{n}" for n in range(1, 31))
    later = [q for _, s, q in api.log[4:] if s == 200]
    assert later[0]["updated_since"] == "25"  # only what changed since the first sweep
    assert {q["updated_since"] for q in later} <= {"25", "30"}


async def test_http_poller_restart_resumes_at_the_next_page(
    kit, settings: Settings, unique_name, fake_api: tuple[FakeApi, str]
) -> None:
    api, url = fake_api
    api.items = [{"id": f"i{n}", "updated_at": n} for n in range(1, 26)]
    api.fail_after = 2
    pipeline = pull_pipeline(
        kit,
        unique_name("http"),
        {
            "type": "http",
            "url": url,
            "interval": "1s",
            "records_path": "$.items",
            "pagination": {"kind": "cursor", "cursor_path": "$.next_cursor"},
            "incremental_param": "updated_since",
            "incremental_path": "$.updated_at",
        },
    )
    ensure_topics(settings, pipeline)
    topic = pipeline.raw_topic("feed")
    cursors = unique_name("cursors")
    running = Running(settings, pipeline, cursors)
    try:
        assert len(await count_until(kit, settings, topic, 20)) == 20
        deadline = time.monotonic() + 10
        while not any(s == 500 for _, s, _ in api.log):
            assert time.monotonic() < deadline, "the poller never reached the broken page"
            await asyncio.sleep(0.1)
    finally:
        await running.close()  # stops while backing off from the 500
    with api.lock:
        api.fail_after = None
        restart_at = len(api.log)
    running = Running(settings, pipeline, cursors)
    try:
        messages = await count_until(kit, settings, topic, 25)
    finally:
        await running.close()
    assert api.log[restart_at][2].get("cursor") == "20"  # resumed, not from the first page
    assert sorted(m.key().decode() for m in messages) == sorted(f"i{n}" for n in range(1, 26))


async def test_files_poller_on_s3(kit, settings: Settings, unique_name, s3_server) -> None:
    prefix = unique_name("drop")
    s3 = s3_server.client()
    s3.put_object(
        Bucket=s3_server.bucket,
        Key=f"{prefix}/a.jsonl.gz",
        Body=gzip.compress(b"".join(orjson.dumps({"id": f"a{i}"}) + b"\n" for i in range(3))),
    )
    s3.put_object(Bucket=s3_server.bucket, Key=f"{prefix}/b.csv", Body=b"id,name\nb0,x\nb1,y\n")
    s3.put_object(Bucket=s3_server.bucket, Key=f"{prefix}/ignored.txt", Body=b"nope")
    pipeline = pull_pipeline(
        kit,
        unique_name("files"),
        {
            "type": "files",
            "url": f"s3://{s3_server.bucket}/{prefix}/",
            "pattern": "*.[jc]*",
            "interval": "0.5s",
        },
    )
    ensure_topics(settings, pipeline)
    topic = pipeline.raw_topic("feed")
    cursors = unique_name("cursors")
    running = Running(settings, pipeline, cursors)
    try:
        assert len(await count_until(kit, settings, topic, 5)) == 5
        s3.put_object(Bucket=s3_server.bucket, Key=f"{prefix}/late/c.jsonl", Body=b'{"id": "c0"}\n')
        messages = await count_until(kit, settings, topic, 6)
    finally:
        await running.close()
    running = Running(settings, pipeline, cursors)  # a restart loads nothing again
    await asyncio.sleep(2)
    await running.close()
    messages = await count_until(kit, settings, topic, 6, timeout=3)
    assert sorted(m.key().decode() for m in messages) == ["a0", "a1", "a2", "b0", "b1", "c0"]
    csv_record = next(orjson.loads(m.value()) for m in messages if m.key() == b"b1")
    assert csv_record == {"id": "b1", "name": "y"}


async def test_sql_poller_on_postgres(
    kit, settings: Settings, unique_name, postgres_url: str
) -> None:
    schema = unique_name("src")
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
        connection.execute(
            sa.text(
                f"CREATE TABLE {schema}.orders (id bigint primary key, amount numeric(10,2), "
                "created_at timestamptz not null default now())"
            )
        )
        connection.execute(
            sa.text(
                f"INSERT INTO {schema}.orders (id, amount) "
                "SELECT g, g * 1.5 FROM generate_series(1, 25) g"
            )
        )
    pipeline = pull_pipeline(
        kit,
        unique_name("sql"),
        {
            "type": "sql",
            "url": postgres_url,
            "table": f"{schema}.orders",
            "cursor_column": "id",
            "batch_size": 10,
            "interval": "0.5s",
        },
    )
    ensure_topics(settings, pipeline)
    topic = pipeline.raw_topic("feed")
    running = Running(settings, pipeline, unique_name("cursors"))
    try:
        assert len(await count_until(kit, settings, topic, 25)) == 25
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    f"INSERT INTO {schema}.orders (id, amount) "
                    "SELECT g, 1 FROM generate_series(26, 30) g"
                )
            )
        messages = await count_until(kit, settings, topic, 30)
    finally:
        await running.close()
        engine.dispose()
    assert sorted(int(m.key()) for m in messages) == list(range(1, 31))
    first = next(orjson.loads(m.value()) for m in messages if m.key() == b"2")
    assert first["amount"] == "3.00" and "created_at" in first
