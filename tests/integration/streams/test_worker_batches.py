"""The worker's output batches on the embedded broker's S3 storage (both engines).

Tansu stores every produced message set as one S3 object, so each object costs the S3 server
several PUTs and GETs: a worker batch should leave as one message set per partition.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hosepipe.kafka import MAX_BATCH_BYTES
from hosepipe.localstack.broker_trim import group_by_partition
from streams.dedupe import changelog_topic
from streams.output import max_message_bytes
from tests.conftest import S3Endpoint
from tests.integration.streams.conftest import event, make_stage

pytestmark = pytest.mark.integration

RECORDS = 3000


def batch_objects(s3_server: S3Endpoint, bucket: str, topic: str) -> int:
    client = s3_server.client()
    listing = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        listing += [(o["Key"], o["LastModified"].timestamp()) for o in page.get("Contents", [])]
    return len(group_by_partition(listing).get((topic, 0), []))


def test_a_worker_batch_leaves_as_one_message_set(
    s3_broker: tuple[str, str], s3_server: S3Endpoint, tmp_path: Path, engine: str
) -> None:
    bootstrap, bucket = s3_broker
    stage = make_stage(bootstrap, tmp_path, engine, partitions=1, batch_size=RECORDS)
    pipeline = stage.pipeline
    t = int(time.time() * 1000)
    # ~3 MB of canonical events: three message sets or more under librdkafka's default
    # batch.size (1,000,000) and the worker's former linger.ms=5.
    stage.produce([event(i, t, pad=f"{i:08d}" * 110) for i in range(RECORDS)])

    runner = stage.start_runner(batch_size=RECORDS)
    try:
        stage.wait_for(lambda: (s := stage.stats()) and s.out == RECORDS, what="all events out")
    finally:
        stage.stop_runner(runner)

    events = stage.canonical_events()
    assert len(events) == RECORDS
    assert sum(len(str(e["payload"])) for e in events) > 2_500_000  # the batch is ~3 MB
    if engine == "faust":
        # faust's changelog (one record per producer batch) says nothing about the worker's
        # batches; the 3,000 waiting records make one batch, or two when the first poll
        # returns early. The former producer (linger.ms=5, librdkafka's batch.size) made 3.
        assert 1 <= batch_objects(s3_server, bucket, stage.canonical) <= 2
        return
    assert runner.batch_bytes == MAX_BATCH_BYTES - MAX_BATCH_BYTES // 32  # from the topics
    assert runner.max_message_bytes == max_message_bytes(pipeline)  # fits the 8 MiB topics
    changelog = changelog_topic(pipeline.streams.consumer_group, stage.raw)
    # One changelog message per worker batch: the 3,000 waiting records make one batch, or
    # two when the first poll returns early.
    batches = batch_objects(s3_server, bucket, changelog)
    assert 1 <= batches <= 2
    assert batch_objects(s3_server, bucket, stage.canonical) == batches
