"""bulk-load through raw.<source>: every record once, resumable, a rerun adds nothing."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from connectors.bulk import bulk_load
from connectors.cursors import CursorStore
from connectors.delivery import DeliveryProducer
from connectors.pull.files import FileLocations
from hosepipe.settings import Settings
from hosepipe.topics import ensure_topics

pytestmark = pytest.mark.integration


async def test_bulk_load_resumes_and_rerun_is_idempotent(
    kit, settings: Settings, unique_name, tmp_path: Path
) -> None:
    pipeline = kit.make_pipeline(unique_name("bulk"))
    ensure_topics(settings, pipeline)
    topic = pipeline.raw_topic("clicks")
    cursor_topic = unique_name("cursors")
    jsonl = tmp_path / "history.jsonl.gz"
    jsonl.write_bytes(
        gzip.compress(b"".join(orjson.dumps({"id": f"j{i}", "n": i}) + b"\n" for i in range(1200)))
    )
    csv = tmp_path / "more.csv"
    csv.write_text("id,n\n" + "".join(f"c{i},{i}\n" for i in range(300)))

    # An earlier run was interrupted after 500 acknowledged records of the JSONL file.
    producer = DeliveryProducer.from_settings(settings, "test")
    store = CursorStore.open(settings, producer, cursor_topic)
    ref = FileLocations(settings).ref(str(jsonl))
    await store.save(
        f"bulk/clicks/{ref.url}", {"version": ref.version, "records": 500, "done": False}
    )
    producer.close()

    first = await bulk_load(
        settings,
        pipeline,
        "clicks",
        [str(tmp_path)],
        cursor_topic=cursor_topic,
        batch_size=250,
        show_progress=False,
    )
    assert sum(first.loaded.values()) == 700 + 300
    again = await bulk_load(
        settings,
        pipeline,
        "clicks",
        [str(jsonl), str(csv)],
        cursor_topic=cursor_topic,
        show_progress=False,
    )
    assert again.loaded == {} and len(again.skipped) == 2
    messages = kit.read_topic(settings.kafka_bootstrap, topic, 1000, timeout=20)
    keys = sorted(m.key().decode() for m in messages)
    assert keys == sorted([f"j{i}" for i in range(500, 1200)] + [f"c{i}" for i in range(300)])
