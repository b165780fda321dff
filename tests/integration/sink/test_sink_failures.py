"""Crashes and outages: kill -9 of the sink process, S3 stopped mid-stream."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from hosepipe.config import PipelineConfig
from hosepipe.observability import serve_metrics
from hosepipe.settings import Settings

pytestmark = pytest.mark.integration


def _healthz(port: int) -> int:
    """HTTP status of the sink's /healthz."""
    import urllib.error
    import urllib.request

    try:
        return int(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_kill_9_at_random_points_loses_and_duplicates_nothing(
    settings: Settings, canonical: Callable[..., PipelineConfig], kit, tmp_path: Path
) -> None:
    pipeline = canonical(max_rows=300, max_age="0.3s")
    total, chunk = 6000, 1000
    rng = random.Random(4)
    log = tmp_path / "sink.log"
    produced = 0
    for _ in range(4):  # produce while the sink gets killed at random moments
        process = kit.start_sink_process(settings, log)
        if produced < total:
            kit.produce(settings, pipeline.topics.canonical, kit.make_events(chunk, start=produced))
            produced += chunk
        time.sleep(rng.uniform(3.0, 6.0))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    while produced < total:
        kit.produce(settings, pipeline.topics.canonical, kit.make_events(chunk, start=produced))
        produced += chunk
    kit.finish_after_kills(settings, pipeline, total, log)


def test_s3_outage_holds_offsets_then_catches_up(
    canonical: Callable[..., PipelineConfig],
    settings: Settings,
    kit,
    run_sink_thread,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Our own SeaweedFS, so stopping it does not disturb other tests."""
    from hosepipe.localstack.servers import free_port, start_s3

    s3 = start_s3(tmp_path / "s3", free_port(), "sink-outage", "sink-outage-secret", ["lake"])
    port = s3.port
    own = settings.model_copy(
        update={
            "lake_url": "s3://lake/outage",
            "s3_endpoint_url": s3.endpoint_url,
            "s3_access_key_id": "sink-outage",
            "s3_secret_access_key": s3.secret_key,
        }
    )
    own = Settings(**{**own.model_dump(), "s3_secret_access_key": s3.secret_key, "_env_file": None})
    # the default backoff cap (30 s): after a 12 s outage the next batch retry would be up
    # to ~16 s away; the probe (about once a second) resumes the sink as soon as S3 is back
    pipeline = canonical(max_rows=100, max_age="0.3s", s3_max_attempts=2)
    caplog.set_level("WARNING", logger="sink.health")
    running = run_sink_thread(own, pipeline)
    health = serve_metrics("127.0.0.1", 0, running.runner.health_check, CollectorRegistry())
    try:
        kit.produce(own, pipeline.topics.canonical, kit.make_events(300, start=0))
        kit.wait_committed(own, pipeline, 300)
        assert _healthz(health.port) == 200
        s3.stop()
        kit.produce(own, pipeline.topics.canonical, kit.make_events(500, start=300))
        time.sleep(12)
        assert kit.committed_total(own, pipeline) == 300  # nothing committed while down
        assert _healthz(health.port) == 503
        s3 = start_s3(tmp_path / "s3", port, "sink-outage", "sink-outage-secret", ["lake"])
        back = time.monotonic()
        kit.wait_committed(own, pipeline, 800, timeout=90)
        caught_up = time.monotonic() - back
        assert caught_up < 8, f"caught up {caught_up:.1f} s after S3 came back"
        assert _healthz(health.port) == 200
    finally:
        health.stop()
        running.stop()
        s3.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "sink.health"]
    assert messages.count("lake unavailable, holding offsets and retrying") == 1
    assert messages.count("lake recovered, catching up") == 1
    s3 = start_s3(tmp_path / "s3", port, "sink-outage", "sink-outage-secret", ["lake"])
    try:
        assert _read_after_restart(lambda: kit.lake_counts(own)) == (800, 800)
    finally:
        s3.stop()


def _read_after_restart(read: Callable[[], tuple[int, int]]) -> tuple[int, int]:
    """Just after a restart SeaweedFS answers S3 calls before its volume serves reads
    (GetObject: INTERNAL_FAILURE for a few seconds): retry the read, not the assertion."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
