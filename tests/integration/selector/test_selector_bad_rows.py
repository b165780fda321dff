"""Rows PostgreSQL cannot store (a NUL in text or jsonb) go to rejected_rows; the rest of
the lake file loads, the file is checkpointed, and the next run does not fail on it again."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, text

from hosepipe.config import PipelineConfig
from hosepipe.settings import Settings
from selector.load import Method
from selector.runner import RunOptions, Selector
from selector.schema import upgrade
from selector.service import build_selector

pytestmark = pytest.mark.integration

COPY_RULE = {"name": "copy_all", "table": "orders_copy", "sources": ["orders"]}
NUL_REASON = "contains a NUL character (U+0000, \\u0000)"


def rejected(engine: Engine) -> dict[tuple[str, str], tuple[str, str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text('SELECT rule, event_id, reason, file, "row" FROM rejected_rows'))
        return {(rule, eid): (reason, file, row) for rule, eid, reason, file, row in rows}


def count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


@pytest.mark.parametrize("method", ["copy", "merge"])
def test_nul_rows_are_rejected_per_column_and_the_file_loads(
    method: Method,
    make_event: Callable[..., dict[str, Any]],
    orders_rule: dict[str, Any],
    selector_settings: Settings,
    write_pipeline: Callable[..., PipelineConfig],
    write_lake: Callable[..., list[str]],
    engine: Engine,
) -> None:
    pipeline = write_pipeline(rules=[orders_rule, COPY_RULE])
    options = RunOptions(progress=False, method=method)
    upgrade(build_selector(selector_settings, pipeline, options).engine, pipeline.selection)
    selector: Selector = build_selector(selector_settings, pipeline, options)

    nul_payload = json.dumps({"id": "on1", "customer": {"id": "c\x00"}, "total": {}})
    assert "\\u0000" in nul_payload  # valid JSON: the escape, not a raw NUL byte
    bad = [
        make_event(101, payload=nul_payload, event_id="n1"),
        {**make_event(102, event_id="n2"), "subject": "s\x00"},
        make_event(103, event_id="n3\x00"),
        {**make_event(104, event_id="n4"), "attributes": {"k": "v\x00"}},
        make_event(105, payload="{not json", event_id="n5"),
    ]
    good = [make_event(i) for i in range(20)]
    [path] = write_lake([*good[:10], *bad, *good[10:]])

    summary = selector.run_once()
    assert summary.files == 1
    # events and the copy rule store subject, attributes and payload: all five rejected;
    # the orders rule projects payload.id/customer.id/total and event_type only.
    assert summary.rejected == {"events": 5, "copy_all": 5, "orders": 3}
    assert summary.rows == {"events": 20, "orders_copy": 20, "orders": 22}
    assert count(engine, "SELECT count(*) FROM events") == 20
    assert count(engine, "SELECT count(*) FROM orders_copy") == 20
    assert count(engine, "SELECT count(*) FROM orders WHERE _event_id IN ('n2', 'n4')") == 2

    rows = rejected(engine)
    assert set(rows) == {
        *(
            (rule, eid)
            for rule in ("events", "copy_all")
            for eid in ("n1", "n2", "n3\\u0000", "n4", "n5")
        ),
        ("orders", "n1"),
        ("orders", "n3\\u0000"),
        ("orders", "n5"),
    }
    assert (
        rows["events", "n1"][0]
        == f"payload: {NUL_REASON}, which PostgreSQL text and jsonb cannot store"
    )
    assert rows["events", "n2"][0].startswith(f"subject: {NUL_REASON}")
    assert rows["events", "n3\\u0000"][0].startswith(f"event_id: {NUL_REASON}")
    assert rows["events", "n4"][0].startswith(f"attributes: {NUL_REASON}")
    assert rows["events", "n5"][0] == "payload is not valid JSON"
    assert rows["orders", "n1"][0].startswith(
        f"column customer_id ($.payload.customer.id): {NUL_REASON}"
    )
    assert rows["orders", "n3\\u0000"][0].startswith(f"event_id: {NUL_REASON}")
    # The recorded row is the event with each NUL written as the text \u0000.
    _, file, row = rows["events", "n2"]
    assert file == path and row["subject"] == "s\\u0000" and row["event_id"] == "n2"
    assert rows["events", "n4"][2]["attributes"] == {"k": "v\\u0000"}
    assert rows["events", "n1"][2]["payload"] == nul_payload
    assert {file for _, file, _ in rows.values()} == {path}

    # Checkpointed: the next run has nothing to do (and does not fail on the file again).
    again = selector.run_once()
    assert again.files == 0 and again.rejected == {}

    # A replay of the file with one more good event (the direct COPY conflicts and the batch
    # merges): the same rows are rejected again, once each, and the new event loads.
    write_lake([*good, make_event(20), *bad])
    replay = selector.run_once()
    assert replay.files == 1 and replay.rejected == {"events": 5, "copy_all": 5, "orders": 3}
    assert count(engine, "SELECT count(*) FROM events") == 21
    assert count(engine, "SELECT count(*) FROM rejected_rows") == 13
