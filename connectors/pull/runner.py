"""``hosepipe poll``: one asyncio task per pull source, sharing one producer and cursor store."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from connectors.cursors import CursorStore
from connectors.delivery import DeliveryProducer
from connectors.pull.emitter import Emitter
from connectors.pull.files import FileLocations
from connectors.pull.files_poller import FilesPoller
from connectors.pull.http_poller import HttpPoller
from connectors.pull.sql_poller import SqlPoller
from connectors.records import record_key
from hosepipe.config import FilesPull, HttpPull, PipelineConfig, SqlPull
from hosepipe.observability import serve_metrics
from hosepipe.settings import Settings
from hosepipe.topics import ensure_topics

log = logging.getLogger(__name__)

Poller = HttpPoller | FilesPoller | SqlPoller


class PollError(Exception):
    """The pollers cannot start; the message says why."""


STALE_GRACE_S = 60.0
"""A poller is stale when its last good sweep is older than 3 intervals plus this."""


def poller_status(poller: Poller, now: float) -> dict[str, Any]:
    """One poller's state for ``/healthz``: starting, ok, failing or stale.

    ``failing``: the last sweep failed (the error is shown); ``stale``: no good sweep for
    3 intervals + 60 s although none failed (a sweep that hangs or a very long backfill).
    """
    interval = poller.spec.interval.total_seconds()
    since_good = now - poller.last_complete
    if poller.last_error is not None:
        state = "failing"
    elif since_good > 3 * interval + STALE_GRACE_S:
        state = "stale"
    elif poller.sweeps == 0:
        state = "starting"
    else:
        state = "ok"
    return {
        "state": state,
        "kind": poller.spec.type,
        "sweeps": poller.sweeps,
        "seconds_since_good_sweep": round(since_good, 1),
        "interval_s": interval,
        "last_error": poller.last_error,
    }


@dataclass
class PollHealth:
    """``/healthz`` of ``hosepipe poll``.

    503 only while the poll loop is not running (before the pollers start, after they
    stop): an upstream API that fails is reported per poller (``degraded``) but restarting
    this process would not fix it, so it must not fail a liveness probe.
    """

    pollers: list[Poller] = field(default_factory=list)
    running: bool = False

    def __call__(self) -> dict[str, Any]:
        now = time.time()
        states = {p.source: poller_status(p, now) for p in self.pollers}
        return {
            "ok": self.running,
            "degraded": any(s["state"] in ("failing", "stale") for s in states.values()),
            "pollers": states,
        }


def build_pollers(
    settings: Settings,
    pipeline: PipelineConfig,
    producer: DeliveryProducer,
    cursors: CursorStore,
    only: Iterable[str] | None = None,
) -> list[Poller]:
    """A poller per selected pull source."""
    sources = pipeline.pull_sources()
    wanted = list(only) if only else list(sources)
    unknown = [s for s in wanted if s not in sources]
    if unknown:
        raise PollError(
            f"not pull sources: {', '.join(unknown)} (pull: {', '.join(sources) or '-'})"
        )
    locations = FileLocations(settings)
    pollers: list[Poller] = []
    for name in wanted:
        config = sources[name]
        emitter = Emitter(
            producer, pipeline.raw_topic(name), name, record_key(name, config), "poll"
        )
        spec = config.pull
        if isinstance(spec, HttpPull):
            pollers.append(HttpPoller(name, spec, emitter, cursors))
        elif isinstance(spec, FilesPull):
            pollers.append(FilesPoller(name, spec, emitter, cursors, locations))
        elif isinstance(spec, SqlPull):
            pollers.append(SqlPoller(name, spec, emitter, cursors))
    return pollers


async def poll_sources(
    settings: Settings,
    pipeline: PipelineConfig,
    stop: asyncio.Event,
    *,
    only: Iterable[str] | None = None,
    cursor_topic: str | None = None,
    health: PollHealth | None = None,
) -> None:
    """Run the pollers until ``stop`` is set; a poller that crashes stops the others."""
    health = health if health is not None else PollHealth()
    await asyncio.to_thread(ensure_topics, settings, pipeline)
    producer = DeliveryProducer.from_settings(settings, "hosepipe-poll")
    try:
        cursors = await asyncio.to_thread(
            CursorStore.open, settings, producer, cursor_topic or pipeline.topics.cursors
        )
        pollers = build_pollers(settings, pipeline, producer, cursors, only)
        health.pollers, health.running = pollers, True
        if not pollers:
            log.warning("no pull sources configured; nothing to poll")
            await stop.wait()
            return
        tasks = [asyncio.create_task(p.run(stop), name=f"poll-{p.source}") for p in pollers]
        log.info("pollers running", extra={"sources": ",".join(p.source for p in pollers)})
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise PollError(
                    f"{task.get_name()} failed: {task.exception()}"
                ) from task.exception()
    finally:
        health.running = False
        await asyncio.to_thread(producer.close)


def run_pollers(
    settings: Settings, pipeline: PipelineConfig, only: list[str] | None = None
) -> None:
    """Blocking entry point of ``hosepipe poll``: SIGINT/SIGTERM stop it cleanly."""
    metrics: Any = None
    health = PollHealth()
    if settings.metrics_port:
        metrics = serve_metrics(settings.bind_host, settings.metrics_port, health)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await poll_sources(settings, pipeline, stop, only=only, health=health)

    try:
        asyncio.run(main())
    finally:
        if metrics is not None:
            metrics.stop()
