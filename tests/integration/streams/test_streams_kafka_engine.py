"""The stream stage on a real broker: DLQ reasons, dedupe across restarts, kill -9, scale-out.

Every test runs once per engine (``kafka``, ``faust``): see the ``engine`` fixture.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def now_ms() -> int:
    return int(time.time() * 1000)


def test_bad_records_go_to_dlq_with_reasons_while_good_ones_flow(
    stage: Any, make_event: Any
) -> None:
    t = now_ms()
    good = [make_event(i, t) for i in range(300)]
    bad: list[tuple[bytes | None, bytes | None]] = [
        (b"b1", b"{not json"),
        (b"b2", b"\xff\xfe"),
        (b"b3", b'{"id": "x3", "ts": "noon", "type": "v"}'),
        (b"b4", b'{"ts": 1, "type": "v"}'),
        (b"b5", b'{"id": "x5", "ts": 1000, "type": "v"}'),  # 1970: implausible
        make_event(99_999, t, pad="x" * 3000),  # over max_record_bytes
    ]
    stage.produce(good[:150] + bad + good[150:] + good[:50])  # 50 duplicates at the end
    runner = stage.start_runner()
    stage.wait_for(lambda: (s := stage.stats()) and s.received == 356, what="356 records counted")
    stage.stop_runner(runner)

    events = stage.canonical_events()
    ids = [e["event_id"] for e in events]
    assert sorted(ids) == sorted(f"e{i}" for i in range(300))
    sample = next(e for e in events if e["event_id"] == "e8")
    assert sample["source"] == "clicks" and sample["subject"] == "u1"
    assert sample["attributes"] == {"channel": "test"}
    assert sample["occurred_at"] == t * 1000

    letters = stage.dead_letters()
    reasons = {(d.key, d.reasons["hosepipe.error.class"]) for d in letters}
    assert reasons == {
        (b"b1", "InvalidJson"),
        (b"b2", "InvalidUtf8"),
        (b"b3", "InvalidTimestamp"),
        (b"b4", "MissingField"),
        (b"b5", "ImplausibleTimestamp"),
        (b"e99999", "RecordTooLarge"),
    }
    first = next(d for d in letters if d.key == b"b1")
    assert first.value == b"{not json"
    assert first.reasons["hosepipe.source"] == "clicks"
    assert first.reasons["hosepipe.original.topic"] == stage.raw
    assert first.reasons["hosepipe.error.stage"] == "decode"
    assert {"hosepipe.original.partition", "hosepipe.original.offset", "hosepipe.failed_at"} <= set(
        first.reasons
    )

    counts = stage.stats()
    assert (counts.received, counts.out, counts.duplicates, counts.dead_lettered) == (
        356,
        300,
        50,
        6,
    )
    assert counts.balanced


@pytest.mark.parametrize("new_machine", [False, True], ids=["same-disk", "new-machine"])
def test_duplicates_dropped_across_restart(
    stage: Any, make_event: Any, tmp_path: Path, new_machine: bool
) -> None:
    t = now_ms()
    stage.produce([make_event(i, t) for i in range(400)])
    state = tmp_path / "state-a"
    runner = stage.start_runner(state_dir=state)
    stage.wait_for(lambda: (s := stage.stats()) and s.received == 400, what="first 400")
    stage.stop_runner(runner)

    # the same 400 again plus 100 new ones; a new machine has no local state at all
    stage.produce([make_event(i, t) for i in range(500)])
    runner = stage.start_runner(state_dir=tmp_path / "state-b" if new_machine else state)
    # At least once: the second worker may read a few records the first one handled again
    # (faust sometimes re-delivers the last record of each partition after a restart), so
    # wait for every record and every new id rather than for an exact count of 900; those
    # re-read records must be dropped as duplicates like the re-sent ones.
    stage.wait_for(
        lambda: (s := stage.stats()) and s.received >= 900 and s.out >= 500,
        what="900 counted and 500 out",
    )
    stage.stop_runner(runner)

    ids = Counter(e["event_id"] for e in stage.canonical_events())
    assert len(ids) == 500
    assert max(ids.values()) == 1, [i for i, n in ids.items() if n > 1][:5]
    counts = stage.stats()
    assert counts.out == 500 and counts.balanced
    assert counts.duplicates == counts.received - 500 >= 400


def test_two_workers_split_partitions_and_still_dedupe(stage: Any, make_event: Any) -> None:
    t = now_ms()
    a = stage.start_runner()
    b = stage.start_runner()

    def split() -> bool:
        owned_a, owned_b = stage.partitions(a), stage.partitions(b)
        return bool(owned_a and owned_b and len(owned_a | owned_b) == 4)

    stage.wait_for(split, timeout=90, what="both workers own partitions")
    assert not stage.partitions(a) & stage.partitions(b)
    batch = [make_event(i, t) for i in range(1000)]
    stage.produce(batch + batch[:300])
    stage.wait_for(lambda: (s := stage.stats()) and s.received == 1300, what="1300 counted")
    stage.stop_runner(a)
    stage.stop_runner(b)
    ids = Counter(e["event_id"] for e in stage.canonical_events())
    assert len(ids) == 1000 and max(ids.values()) == 1
    counts = stage.stats()
    assert counts.duplicates == 300 and counts.balanced


def test_kill_9_mid_stream_loses_nothing(stage: Any, make_event: Any, tmp_path: Path) -> None:
    t = now_ms()
    total = 6000
    records = [make_event(i, t) for i in range(total)]
    records[100] = (b"bad", b"{oops")
    stage.produce(records)
    env = stage.worker_env(tmp_path / "worker-data")
    command = stage.worker_command()
    log = (tmp_path / "worker.log").open("wb")
    first = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        stage.wait_for(lambda: len(stage.canonical_events()) > 500, timeout=90, what="some output")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    second = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wanted = {f"e{i}" for i in range(total) if i != 100}
        stage.wait_for(
            lambda: wanted <= {e["event_id"] for e in stage.canonical_events()},
            timeout=120,
            what="every good id in the canonical topic",
        )
        assert any(d.key == b"bad" for d in stage.dead_letters())
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert second.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]
