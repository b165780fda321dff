"""Avro serde throughput: encode/decode events/s, single-object and Confluent framing.

    python bench/avro_serde.py [--events 200000] [--payload-bytes 200]

Prints one line per measurement. No broker or registry needed (the Confluent encoder is
built with a fixed schema id; framing is the only difference).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from hosepipe.avro import (
    AvroDecoder,
    AvroEncoder,
    confluent_header,
    shipped_writer_schemas,
    single_object_header,
)
from schemas import CANONICAL_EVENT, load_schema


def sample_events(count: int, payload_bytes: int) -> list[dict[str, Any]]:
    filler = "x" * max(0, payload_bytes - 40)
    return [
        {
            "event_id": f"evt-{i:012d}",
            "source": "clickstream",
            "event_type": "page_view",
            "occurred_at": 1_763_790_000_000_000 + i,
            "ingested_at": 1_763_790_100_000_000 + i,
            "subject": f"user-{i % 1000}",
            "payload": json.dumps({"n": i, "url": "/p", "f": filler}),
            "attributes": {"raw_topic": "raw.clickstream", "raw_offset": str(i)},
        }
        for i in range(count)
    ]


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>12,.0f} events/s  ({seconds * 1e6 / count:.2f} µs/event)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--payload-bytes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = parser.parse_args()

    schema = load_schema(CANONICAL_EVENT)
    events = sample_events(args.events, args.payload_bytes)
    decoder = AvroDecoder(
        schema, shipped_writer_schemas(), lambda schema_id: schema
    )  # registry stand-in
    for name, header in (
        ("single-object", single_object_header(schema)),
        ("confluent", confluent_header(1)),
    ):
        encoder = AvroEncoder(schema, header, name)
        best_encode = best_decode = best_single = float("inf")
        values: list[bytes] = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            values = encoder.encode_many(events)
            best_encode = min(best_encode, time.perf_counter() - start)
            start = time.perf_counter()
            for event in events[: args.events // 4]:
                encoder.encode(event)
            best_single = min(best_single, time.perf_counter() - start)
            start = time.perf_counter()
            decoded = decoder.decode_many(values)
            best_decode = min(best_decode, time.perf_counter() - start)
            assert decoded[-1] == events[-1]
        size = sum(map(len, values)) / len(values)
        print(f"{name:13s} message size   {size:>8.0f} B")
        print(f"{name:13s} encode_many    {rate(len(events), best_encode)}")
        print(f"{name:13s} encode (1x1)   {rate(args.events // 4, best_single)}")
        print(f"{name:13s} decode_many    {rate(len(values), best_decode)}")


if __name__ == "__main__":
    main()
