"""The whole pipeline on real servers, every component a subprocess, events entering all ways.

Kafka client → raw topic, HTTP JSON array and NDJSON, the boto3 Firehose client
(PutRecordBatch) and the HTTP poller; with duplicates and malformed records. Then: every
valid event_id is in PostgreSQL once and in the lake once, duplicates are gone, every
malformed record is in the DLQ with its reason, conservation holds at every stage, and
GraphQL pages through all of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
import duckdb
import httpx
import orjson
import pytest

from hosepipe.avro import make_decoder
from hosepipe.kafka import make_producer
from tests.e2e.support import FeedApi, Stack, now_ms, wait_for

if TYPE_CHECKING:
    from mypy_boto3_firehose.type_defs import RecordTypeDef

pytestmark = pytest.mark.integration

COMPLETION_TIMEOUT = 90.0


def event(prefix: str, i: int, base_ms: int, kind: str = "click") -> dict[str, Any]:
    return {
        "id": f"{prefix}-{i}",
        "ts": base_ms + i,
        "type": kind,
        "user": f"u{i % 13}",
        "page": f"/p/{i % 7}",
        "n": i,
    }


PAGE_QUERY = """
query Page($first: Int!, $after: String) {
  events(first: $first, after: $after) {
    edges { cursor node { eventId source eventType subject } }
    pageInfo { hasNextPage endCursor }
    totalCount
  }
}
"""


def walk_pages(stack: Stack, first: int) -> tuple[list[str], int, int]:
    """Every eventId through ``events(first:, after:)``: (ids in order, pages, totalCount)."""
    ids: list[str] = []
    after: str | None = None
    pages = 0
    total = -1
    while True:
        data = stack.graphql(PAGE_QUERY, {"first": first, "after": after})["events"]
        pages += 1
        total = data["totalCount"]
        edges = data["edges"]
        assert len(edges) <= first
        ids.extend(edge["node"]["eventId"] for edge in edges)
        if not data["pageInfo"]["hasNextPage"]:
            assert len(edges) <= first
            return ids, pages, total
        assert len(edges) == first, "a page before the last one is short"
        after = data["pageInfo"]["endCursor"]
        assert after == edges[-1]["cursor"]
        assert pages < 1000, "pagination does not end"


def test_events_enter_all_ways_and_arrive_exactly_once(
    e2e_stack: Callable[..., Stack], feed_api: tuple[FeedApi, str]
) -> None:
    api, feed_url = feed_api
    stack = e2e_stack(feed_url=feed_url)
    tag = stack.tag
    clicks, orders, feed = stack.source("clicks"), stack.source("orders"), stack.source("feed")
    base = now_ms() - 3_600_000  # an hour ago: a recent, plausible event time

    expected: dict[str, set[str]] = {clicks: set(), orders: set(), feed: set()}
    raw_sent: Counter[str] = Counter()
    duplicates_sent: Counter[str] = Counter()
    # marker in the record's bytes -> (source, expected hosepipe.error.class)
    malformed: dict[str, tuple[str, str]] = {}

    # The poller's feed is there before the poller starts: 25 records + one without a type.
    feed_items = [
        {**event(f"feed-{tag}", i, base, "stock"), "updated_at": 1000 + i} for i in range(25)
    ]
    bad_feed_id = f"bad-feed-notype-{tag}"
    api.add([*feed_items, {"id": bad_feed_id, "ts": base, "updated_at": 2000}])
    expected[feed] |= {item["id"] for item in feed_items}
    raw_sent[feed] += 26
    malformed[bad_feed_id] = (feed, "MissingField")

    stack.start_all()

    # 1. A Kafka client producing to raw.<source>, keyed by id like ingest does.
    producer = make_producer(stack.settings)
    raw_clicks = stack.pipeline.raw_topic(clicks)
    kafka_events = [event(f"k-{tag}", i, base) for i in range(300)]
    for item in kafka_events + kafka_events[:30]:
        producer.produce(raw_clicks, orjson.dumps(item), item["id"].encode())
    bad_kafka = {
        f"bad-json-{tag}": (b'{"id": "bad-json-%s", "ts": ' % tag.encode(), "InvalidJson"),
        f"bad-utf8-{tag}": (b'\xff\xfe{"id": "bad-utf8-%s"}' % tag.encode(), "InvalidUtf8"),
        f"bad-ts-{tag}": (
            orjson.dumps({"id": f"bad-ts-{tag}", "ts": "noon", "type": "click"}),
            "InvalidTimestamp",
        ),
        f"bad-old-{tag}": (
            orjson.dumps({"id": f"bad-old-{tag}", "ts": 1000, "type": "click"}),
            "ImplausibleTimestamp",
        ),
    }
    for marker, (value, reason) in bad_kafka.items():
        producer.produce(raw_clicks, value, marker.encode())
        malformed[marker] = (clicks, reason)
    assert producer.flush(30) == 0, "the Kafka client's records were not all acknowledged"
    expected[clicks] |= {e["id"] for e in kafka_events}
    raw_sent[clicks] += 300 + 30 + len(bad_kafka)
    duplicates_sent[clicks] += 30

    # 2. HTTP endpoint, JSON array: 100 new, 20 repeats of Kafka-client ids, one without id.
    http_events = [event(f"h-{tag}", i, base) for i in range(100)]
    no_id_marker = f"bad-noid-{tag}"
    no_id = {"note": no_id_marker, "ts": base, "type": "click"}
    body = [*http_events, *kafka_events[30:50], no_id]
    response = httpx.post(f"{stack.ingest_url}/v1/sources/{clicks}/records", json=body, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["accepted"], answer["failed"]) == (121, 0), answer
    expected[clicks] |= {e["id"] for e in http_events}
    raw_sent[clicks] += 121
    duplicates_sent[clicks] += 20
    malformed[no_id_marker] = (clicks, "MissingField")

    # 3. HTTP endpoint, NDJSON: 100 new orders and a line that is not a JSON object, which
    # ingest refuses itself (per-record InvalidRecord, never written to Kafka).
    ndjson_events = [event(f"n-{tag}", i, base, "order") for i in range(100)]
    lines = [orjson.dumps(e).decode() for e in ndjson_events] + ["this is not json"]
    response = httpx.post(
        f"{stack.ingest_url}/v1/sources/{orders}/records",
        content="\n".join(lines).encode(),
        headers={"Content-Type": "application/x-ndjson"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["accepted"], answer["failed"]) == (100, 1), answer
    refused = [r for r in answer["results"] if "error" in r]
    assert refused and refused[0]["index"] == 100 and refused[0]["error"] == "InvalidRecord"
    expected[orders] |= {e["id"] for e in ndjson_events}
    raw_sent[orders] += 100

    # 4. boto3's Firehose client: 200 new, 20 repeats inside the batch, two that are no events.
    firehose = boto3.client(
        "firehose",
        endpoint_url=stack.ingest_url,
        region_name="us-east-1",
        aws_access_key_id="AKIDE2ETEST",
        aws_secret_access_key="e2e-secret-key",
    )
    fh_events = [event(f"f-{tag}", i, base, "order") for i in range(200)]
    records: list[RecordTypeDef] = [
        {"Data": orjson.dumps(e) + b"\n"} for e in fh_events + fh_events[:20]
    ]
    records.append({"Data": f"not json bad-fh-text-{tag}".encode()})
    records.append({"Data": orjson.dumps([f"bad-fh-array-{tag}"])})
    result = firehose.put_record_batch(DeliveryStreamName=orders, Records=records)
    assert result["FailedPutCount"] == 0, result
    assert len(result["RequestResponses"]) == len(records)
    expected[orders] |= {e["id"] for e in fh_events}
    raw_sent[orders] += len(records)
    duplicates_sent[orders] += 20
    malformed[f"bad-fh-text-{tag}"] = (orders, "InvalidJson")
    malformed[f"bad-fh-array-{tag}"] = (orders, "NotAnObject")

    all_expected = set().union(*expected.values())
    assert len(all_expected) == 725

    # ---- wait for PostgreSQL to hold everything (bounded; the state is then checked exactly)
    took = wait_for(
        f"{len(all_expected)} events in PostgreSQL",
        lambda: stack.pg_counts()[1] >= len(all_expected),
        COMPLETION_TIMEOUT,
        describe=lambda: f"pg (rows, distinct) = {stack.pg_counts()}\n{stack.tails()}",
    )
    print(f"\nall {len(all_expected)} events queryable in PostgreSQL {took:.1f} s after sending")
    stack.assert_alive()

    # ---- PostgreSQL: each valid id exactly once, nothing else
    rows, distinct = stack.pg_counts()
    assert rows == distinct == len(all_expected)
    assert set(stack.pg_event_ids()) == all_expected

    # ---- raw topics: everything accepted is there (count by consuming to the end)
    raw_counts = {s: len(stack.read_topic(stack.pipeline.raw_topic(s))) for s in expected}
    assert raw_counts == dict(raw_sent)

    # ---- canonical topic: each valid id once (no fault: the dedupe is exact)
    decoder = make_decoder(stack.settings)
    canonical = [
        decoder.decode(m.value()) for m in stack.read_topic(stack.pipeline.topics.canonical)
    ]
    canonical_ids = Counter(e["event_id"] for e in canonical)
    assert set(canonical_ids) == all_expected
    repeated = sorted(i for i, n in canonical_ids.items() if n > 1)
    assert not repeated, f"{len(repeated)} duplicates passed the stream stage: {repeated[:5]}"
    per_source = Counter(e["source"] for e in canonical)
    assert per_source == {s: len(ids) for s, ids in expected.items()}

    # ---- DLQ: every malformed record with its reason headers
    dlq = stack.read_topic(stack.pipeline.topics.dlq)
    found: dict[str, dict[str, str]] = {}
    for message in dlq:
        headers = {k: v.decode("utf-8", "replace") for k, v in message.headers() or []}
        value = message.value() or b""
        markers = [m for m in malformed if m.encode() in value]
        assert len(markers) == 1, f"unexpected DLQ record {value!r} {headers}"
        marker = markers[0]
        assert marker not in found, f"{marker} dead-lettered twice"
        found[marker] = headers
    assert set(found) == set(malformed)
    for marker, (source, reason) in malformed.items():
        headers = found[marker]
        assert headers["hosepipe.source"] == source, (marker, headers)
        assert headers["hosepipe.error.class"] == reason, (marker, headers)
        assert headers["hosepipe.error.message"], (marker, headers)
        assert headers["hosepipe.original.topic"] == stack.pipeline.raw_topic(source)

    # ---- conservation per source: raw = canonical + duplicates dropped + DLQ (+ dropped)
    dlq_per_source = Counter(source for source, _ in malformed.values())
    for source in expected:
        assert raw_counts[source] == (
            per_source[source] + duplicates_sent[source] + dlq_per_source[source]
        ), source

    # ... and the worker's own counters say the same
    def counters_balance() -> bool:
        by_source = {row["source"]: row for row in stack.stats()}
        for source in expected:
            row = by_source[source]
            if row["in"] != raw_counts[source]:
                return False
            assert (
                row["in"] == row["out"] + row["duplicates"] + row["dropped"] + row["dead_lettered"]
            ), row
            assert row["out"] == per_source[source], row
            assert row["duplicates"] == duplicates_sent[source], row
            assert row["dead_lettered"] == dlq_per_source[source], row
            assert row["dropped"] == 0, row
        return True

    wait_for("worker counters to cover every raw record", counters_balance, 30, 1.0)

    # ---- the lake: each valid id exactly once (pyarrow dataset, and DuckDB over it)
    lake_ids = Counter(stack.lake_event_ids())
    assert set(lake_ids) == all_expected
    assert sum(lake_ids.values()) == len(all_expected), "duplicate rows in the lake"
    from hosepipe.lake import lake_dataset

    dataset = lake_dataset(stack.settings, keys=stack.pipeline.sink.partition_keys)
    con = duckdb.connect()
    con.register("lake", dataset)
    lake_rows, lake_distinct, lake_sources = con.execute(
        "select count(*), count(distinct event_id), count(distinct source) from lake"
    ).fetchall()[0]
    assert (lake_rows, lake_distinct, lake_sources) == (len(all_expected), len(all_expected), 3)

    # ---- GraphQL: pagination returns every event exactly once
    ids, pages, total = walk_pages(stack, first=100)
    assert total == len(all_expected)
    assert len(ids) == len(set(ids)) == len(all_expected), "pages overlap or miss rows"
    assert set(ids) == all_expected
    assert pages == 8
    small_ids, _, _ = walk_pages(stack, first=37)
    assert small_ids == ids, "page size changes the order or the content"
    one = stack.graphql(
        "query($id: String!) { event(eventId: $id) { eventId source eventType subject payload "
        "attributes } }",
        {"id": f"k-{tag}-7"},
    )["event"]
    assert one["source"] == clicks and one["eventType"] == "click" and one["subject"] == "u7"
    payload = one["payload"] if isinstance(one["payload"], dict) else orjson.loads(one["payload"])
    assert payload["page"] == "/p/0" and payload["n"] == 7
    assert "e2e" in str(one["attributes"])
    stack.assert_alive()
