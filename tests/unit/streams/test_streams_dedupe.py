"""The RocksDB dedupe store: window semantics, bounded by expiry, rebuilt from a changelog."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.dedupe import PartitionStore, decode_changelog, encode_changelog

HOUR = 3600 * 1_000_000


def test_seen_within_window_only(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0", window_us=HOUR)
    store.remember([("a", 1000), ("b", 1000 + HOUR // 2)], changelog_offset=7)
    assert store.seen(["a", "b", "c"], 1000 + HOUR - 1) == [True, True, False]
    assert store.seen(["a", "b"], 1000 + HOUR) == [False, True]
    assert store.changelog_offset == 7
    assert store.expire(1000 + HOUR) == 1
    assert store.count() == 1
    store.close()
    reopened = PartitionStore(tmp_path / "p0", window_us=HOUR)
    assert reopened.seen(["b"], 1000 + HOUR) == [True]
    assert reopened.changelog_offset == 7
    reopened.close()


def test_restore_skips_expired_and_records_offset(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p1", window_us=HOUR)
    now = 10 * HOUR
    records = [encode_changelog(["old"], now - 2 * HOUR), encode_changelog(["new"], now - 10)]
    applied = store.restore(
        [(*decode_changelog(value), offset) for offset, value in enumerate(records)], now
    )
    assert applied == 1
    assert store.seen(["old", "new"], now) == [False, True]
    assert store.changelog_offset == 1
    store.close()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=5), st.integers(0, 10 * HOUR))))
def test_expiry_bounds_state_to_one_window(entries: list[tuple[str, int]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        store = PartitionStore(Path(directory), window_us=HOUR)
        latest: dict[str, int] = {}
        for event_id, first_seen in entries:
            store.remember([(event_id, first_seen)])
            latest[event_id] = first_seen
        now = 10 * HOUR
        store.expire(now)
        alive = {i for i, t in latest.items() if t > now - HOUR}
        assert store.count() == len(alive)
        ids = sorted(latest)
        assert store.seen(ids, now) == [i in alive for i in ids]
        store.close()
