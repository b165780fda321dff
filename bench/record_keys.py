"""What keying raw records by event id costs ingest, per record, for the example's sources.

    python bench/record_keys.py [--records 20000] [--repeat 5]

For each push or pull source of ``hosepipe.yaml`` (the demo's records), the Kafka key that
ingest and pollers give a record (:func:`connectors.records.record_key`: ``key_path``, else
the mapping's event id), from a parsed record (the plain endpoint and pollers parse every
record anyway) and from raw bytes (Firehose's opaque ``Data``, parsed for the key), beside
a plain ``orjson.loads`` of the same bytes. Best of ``--repeat`` runs, µs per record, one
core. No servers needed.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from connectors.records import RecordKey, key_of_bytes, record_key
from hosepipe.config import load_pipeline
from hosepipe.demo import DemoCounts, DemoMix, InventoryApi, clickstream_event, order_event

REPO = Path(__file__).resolve().parent.parent


def demo_records(source: str, count: int) -> list[bytes]:
    mix = DemoMix(rng=random.Random(7), late=0)
    if source == "clickstream":
        return [orjson.dumps(clickstream_event(mix, DemoCounts())) for _ in range(count)]
    if source == "orders":
        return [orjson.dumps(order_event(mix, DemoCounts())) for _ in range(count)]
    api = InventoryApi(seed=7)
    while len(api.page({}, page_size=count)["items"]) < count:
        api.tick(1000)
    return [orjson.dumps(row) for row in api.page({}, page_size=count)["items"]]


def best_us(work: Callable[[], Any], records: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        began = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - began)
    return best / records * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--config", type=Path, default=REPO / "hosepipe.yaml")
    args = parser.parse_args()
    pipeline = load_pipeline(args.config)
    print("| source | keyed by | key of a parsed record | key from bytes | orjson.loads alone |")
    print("|---|---|---|---|---|")
    for name, config in pipeline.sources.items():
        raw = demo_records(name, args.records)
        by = f"`key_path` {config.key_path}" if config.key_path else "mapping's event_id"
        of_parsed, of_bytes, loads = measure(record_key(name, config), raw, args.repeat)
        print(f"| {name} | {by} | {of_parsed:.2f} µs | {of_bytes:.2f} µs | {loads:.2f} µs |")


def measure(key: RecordKey, raw: list[bytes], repeat: int) -> tuple[float, float, float]:
    """µs per record: key of a parsed record, key from bytes, orjson.loads alone."""
    parsed = [orjson.loads(r) for r in raw]

    def keys_of_parsed() -> None:
        for document in parsed:
            key(document)

    def keys_of_bytes() -> None:
        for data in raw:
            key_of_bytes(data, key)

    def loads() -> None:
        for data in raw:
            orjson.loads(data)

    return (
        best_us(keys_of_parsed, len(raw), repeat),
        best_us(keys_of_bytes, len(raw), repeat),
        best_us(loads, len(raw), repeat),
    )


if __name__ == "__main__":
    main()
