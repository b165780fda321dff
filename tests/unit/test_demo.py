"""The demo generator produces what the example pipeline expects, with its imperfections."""

from __future__ import annotations

import random
from urllib.parse import parse_qs

import orjson

from hosepipe.demo import (
    DemoCounts,
    DemoMix,
    InventoryApi,
    clickstream_event,
    order_event,
    with_imperfections,
)


def test_mix_of_duplicates_and_malformed_records() -> None:
    mix, counts = DemoMix(rng=random.Random(7)), DemoCounts()
    records = list(with_imperfections(clickstream_event, mix, counts, 20_000))
    assert len(records) == 20_000
    assert counts.sent + counts.duplicates + counts.malformed == 20_000
    assert 0.035 < counts.duplicates / 20_000 < 0.065
    assert 0.005 < counts.malformed / 20_000 < 0.015
    assert 0.01 < counts.late / counts.sent < 0.03
    bad = 0
    for record in records:
        try:
            orjson.loads(record)
        except orjson.JSONDecodeError:
            bad += 1
    assert bad == counts.malformed


def test_order_shape_matches_example_mapping() -> None:
    order = order_event(DemoMix(), DemoCounts())
    assert {"order", "status", "updated_at"} <= set(order)
    assert order["updated_at"][-6] in "+-" or order["updated_at"].endswith("+00:00")
    assert order["order"]["customer"]["id"].startswith("c-")


def test_inventory_api_pages_with_cursor_and_since() -> None:
    api = InventoryApi()
    api.tick(60)
    seen = []
    cursor: str | None = "0"
    while cursor is not None:
        page = api.page(parse_qs(f"cursor={cursor}"))
        seen.extend(page["items"])
        cursor = page["next_cursor"]
    assert len(seen) == 60
    newest = max(r["updated_at"] for r in seen)
    assert all(r["updated_at"] >= newest for r in api.page({"updated_since": [newest]})["items"])
