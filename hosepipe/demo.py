"""The demo load generator behind ``make run`` (``hosepipe demo``).

It feeds the example pipeline the three ways real producers do, with the imperfections real
data has:

- **clickstream**: NDJSON batches to the HTTP endpoint, epoch-millisecond times;
- **orders**: a Kafka producer straight into ``raw.orders``, keyed by event id as a raw
  producer must be, every tenth batch through an unmodified boto3 ``firehose`` client
  against the ingest service instead;
- **inventory**: a small stock-level HTTP API on loopback that the poller pulls (cursor
  pagination, ``updated_since``), times without offset in Europe/Berlin.

About 5% of the records are exact re-sends (duplicates), 1% are malformed (invalid JSON or
bytes that are not UTF-8, sent through Kafka because the HTTP endpoint rightly refuses them),
and 2% are late: their event time lies hours in the past.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import orjson

from hosepipe.config import PipelineConfig
from hosepipe.settings import Settings

log = logging.getLogger(__name__)

PAGES = ["/", "/pricing", "/docs", "/blog/launch", "/signup", "/checkout", "/account"]
SKUS = [f"SKU-{n:05d}" for n in range(1, 41)]
WAREHOUSES = ["BER-1", "HAM-2", "MUC-1"]
BERLIN = ZoneInfo("Europe/Berlin")


@dataclass
class DemoCounts:
    """What the generator has sent so far, by kind (printed when it stops)."""

    sent: int = 0
    duplicates: int = 0
    malformed: int = 0
    late: int = 0
    http_errors: int = 0


@dataclass
class DemoMix:
    """Shares of imperfect records."""

    duplicates: float = 0.05
    malformed: float = 0.01
    late: float = 0.02
    rng: random.Random = field(default_factory=random.Random)  # a new run sends new events


def _event_time(mix: DemoMix, counts: DemoCounts) -> datetime:
    now = datetime.now(UTC)
    if mix.rng.random() < mix.late:
        counts.late += 1
        return now - timedelta(hours=mix.rng.randint(2, 30), minutes=mix.rng.randint(0, 59))
    return now - timedelta(milliseconds=mix.rng.randint(0, 2000))


def clickstream_event(mix: DemoMix, counts: DemoCounts) -> dict[str, Any]:
    """A tracker event in the clickstream's own shape."""
    at = _event_time(mix, counts)
    user = f"u-{mix.rng.randint(1, 500):04d}"
    return {
        "eventId": str(uuid.UUID(int=mix.rng.getrandbits(128))),
        "ts": int(at.timestamp() * 1000),
        "type": mix.rng.choice(["page_view", "page_view", "page_view", "click", "scroll"]),
        "user": {"id": user, "anonymous": mix.rng.random() < 0.3},
        "page": {"path": mix.rng.choice(PAGES), "referrer": mix.rng.choice(["", "search", "ad"])},
        "context": {"appVersion": "4.2.1", "userAgent": "Mozilla/5.0 (X11; Linux x86_64)"},
    }


def order_event(mix: DemoMix, counts: DemoCounts) -> dict[str, Any]:
    """An order lifecycle event: ISO-8601 with offset, nested objects, no event id."""
    at = _event_time(mix, counts).astimezone(ZoneInfo(mix.rng.choice(["Europe/Paris", "UTC"])))
    items = [
        {"sku": mix.rng.choice(SKUS), "qty": mix.rng.randint(1, 3)}
        for _ in range(mix.rng.randint(1, 4))
    ]
    return {
        "order": {
            "id": f"o-{mix.rng.randint(1, 10**9):09d}",
            "customer": {"id": f"c-{mix.rng.randint(1, 800):04d}", "tier": "standard"},
            "total": {"amount": f"{mix.rng.uniform(5, 400):.2f}", "currency": "EUR"},
            "items": items,
        },
        "status": mix.rng.choice(["placed", "paid", "shipped", "cancelled"]),
        "updated_at": at.isoformat(timespec="milliseconds"),
    }


def malformed_record(mix: DemoMix) -> bytes:
    """Bytes a broken producer sends: truncated JSON or invalid UTF-8."""
    if mix.rng.random() < 0.5:
        return b'{"order": {"id": "o-broken", "status": '
    return b'{"note": "caf\xe9 latin-1 bytes"}'


def with_imperfections(
    make: Any, mix: DemoMix, counts: DemoCounts, batch_size: int
) -> Iterator[bytes]:
    """A batch of encoded records, some duplicated, some malformed."""
    previous: bytes | None = None
    for _ in range(batch_size):
        roll = mix.rng.random()
        if previous is not None and roll < mix.duplicates:
            counts.duplicates += 1
            yield previous
            continue
        if roll < mix.duplicates + mix.malformed:
            counts.malformed += 1
            yield malformed_record(mix)
            continue
        previous = orjson.dumps(make(mix, counts))
        counts.sent += 1
        yield previous


# --------------------------------------------------------------------------- inventory API


class InventoryApi:
    """Stock levels that change over time, served with cursor pagination on loopback."""

    def __init__(self, seed: int = 11) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._rows: list[dict[str, Any]] = []

    def tick(self, changes: int = 5) -> None:
        """Some stock levels change now."""
        now = datetime.now(BERLIN).replace(tzinfo=None, microsecond=0)
        with self._lock:
            for _ in range(changes):
                self._rows.append(
                    {
                        "sku": self._rng.choice(SKUS),
                        "warehouse": self._rng.choice(WAREHOUSES),
                        "level": self._rng.randint(0, 250),
                        "updated_at": now.isoformat(sep=" "),
                    }
                )

    def page(self, query: dict[str, list[str]], page_size: int = 25) -> dict[str, Any]:
        since = query.get("updated_since", [""])[0]
        start = int(query.get("cursor", ["0"])[0] or 0)
        with self._lock:
            rows = [r for r in self._rows if r["updated_at"] >= since] if since else self._rows
            items = rows[start : start + page_size]
            more = start + page_size < len(rows)
        return {"items": items, "next_cursor": str(start + page_size) if more else None}

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/v1/stock-levels":
                    self.send_error(404)
                    return
                body = orjson.dumps(api.page(parse_qs(url.query)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="inventory-api", daemon=True).start()
        return server


# --------------------------------------------------------------------------- senders


def _post_clickstream(client: Any, url: str, lines: list[bytes], counts: DemoCounts) -> None:
    # Malformed lines would make the whole NDJSON request fail (HTTP 400): the endpoint
    # validates JSON, so only well-formed lines go this way.
    good = [line for line in lines if _is_json(line)]
    response = client.post(
        url, content=b"\n".join(good), headers={"Content-Type": "application/x-ndjson"}
    )
    if response.status_code >= 300:
        counts.http_errors += 1
        log.warning(
            "ingest refused a demo batch",
            extra={"status": response.status_code, "body": response.text[:200]},
        )


def _is_json(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def _firehose_client(settings: Settings) -> Any:
    import boto3

    return boto3.client(
        "firehose",
        endpoint_url=f"http://127.0.0.1:{settings.ingest_port}",
        region_name="us-east-1",
        aws_access_key_id="demo",
        aws_secret_access_key="demo-secret",
    )


def run_demo(
    settings: Settings,
    pipeline: PipelineConfig,
    *,
    rate: float = 200.0,
    duration: float | None = None,
    inventory_port: int = 8090,
    stop: threading.Event | None = None,
) -> DemoCounts:
    """Send demo traffic at about ``rate`` records/s until ``stop`` is set or ``duration`` ends."""
    import httpx

    from connectors.records import key_of_bytes, record_key
    from hosepipe.kafka import make_producer

    stop = stop or threading.Event()
    # Keyed by event id like every raw producer should be (docs/streams.md, co-partitioning).
    order_key = record_key("orders", pipeline.sources["orders"])
    mix, counts = DemoMix(), DemoCounts()
    inventory = InventoryApi()
    inventory.tick(40)
    server = inventory.serve(settings.bind_host, inventory_port)
    producer = make_producer(settings)
    firehose = _firehose_client(settings)
    ingest_url = f"http://127.0.0.1:{settings.ingest_port}/v1/sources/clickstream/records"
    batch = max(1, int(rate / 4))  # four sends per second
    started = time.monotonic()
    log.info("demo load running", extra={"rate": rate, "inventory_port": inventory_port})
    try:
        with httpx.Client(timeout=10) as client:
            for tick in itertools.count():
                if stop.is_set() or (duration and time.monotonic() - started > duration):
                    break
                half = max(1, batch // 2)
                try:
                    lines = list(with_imperfections(clickstream_event, mix, counts, half))
                    _post_clickstream(client, ingest_url, lines, counts)
                except httpx.HTTPError as exc:
                    counts.http_errors += 1
                    log.warning("ingest unreachable: %s", exc)
                orders = list(with_imperfections(order_event, mix, counts, half))
                if tick % 10 == 9:
                    good = [o for o in orders if _is_json(o)]
                    try:
                        firehose.put_record_batch(
                            DeliveryStreamName="orders", Records=[{"Data": o} for o in good]
                        )
                    except Exception as exc:  # the demo goes on while ingest restarts
                        counts.http_errors += 1
                        log.warning("firehose put failed: %s", exc)
                    orders = [o for o in orders if not _is_json(o)]
                for record in orders:
                    key = key_of_bytes(record, order_key)
                    producer.produce(pipeline.raw_topic("orders"), record, key)
                producer.poll(0)
                if tick % 8 == 0:
                    inventory.tick(mix.rng.randint(1, 6))
                stop.wait(0.25)
    finally:
        producer.flush(10)
        server.shutdown()
        log.info(
            "demo load stopped",
            extra={
                "sent": counts.sent,
                "duplicates": counts.duplicates,
                "malformed": counts.malformed,
                "late": counts.late,
            },
        )
    return counts
