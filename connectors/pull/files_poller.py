"""Pick up files dropped on an S3 prefix or in a local directory, each version once.

Each file has its own cursor ``files/<source>/<url>`` (see :mod:`connectors.pull.files`), so a
file is loaded once, a half-loaded file resumes after its last acknowledged batch, and a file
added while the poller runs is found at the next listing.
"""

from __future__ import annotations

import asyncio
import logging
import time

from connectors.cursors import CursorStore
from connectors.metrics import POLL_ERRORS, POLL_LAG
from connectors.pull.emitter import Emitter
from connectors.pull.files import FileLocations, load_file
from connectors.pull.formats import FormatError
from connectors.pull.http_poller import Stopped, pause
from hosepipe.config import FilesPull

log = logging.getLogger(__name__)


class FilesPoller:
    """One source's file-drop poller."""

    def __init__(
        self,
        source: str,
        spec: FilesPull,
        emitter: Emitter,
        cursors: CursorStore,
        locations: FileLocations,
        batch_size: int = 1000,
    ) -> None:
        self.source = source
        self.spec = spec
        self.emitter = emitter
        self.cursors = cursors
        self.locations = locations
        self.batch_size = batch_size
        self.last_complete = time.time()
        self.sweeps = 0
        self.last_error: str | None = None

    def cursor_key(self, url: str) -> str:
        return f"files/{self.source}/{url}"

    async def sweep(self) -> int:
        """Load every file not loaded yet; returns records sent."""
        refs = await asyncio.to_thread(self.locations.list, self.spec.url, self.spec.pattern)
        total = 0
        for ref in refs:
            state = self.cursors.get(self.cursor_key(ref.url)) or {}
            if state.get("done") and state.get("version") == ref.version:
                continue
            try:
                sent = await load_file(
                    self.locations,
                    ref,
                    self.emitter,
                    self.cursors,
                    self.cursor_key(ref.url),
                    file_format=self.spec.format,
                    batch_size=self.batch_size,
                )
            except FormatError as exc:
                # A malformed file must not block the ones after it; it is retried next sweep
                # from its last good batch, and the error says where it broke.
                POLL_ERRORS.labels(self.source, "bad_file").inc()
                log.error("file not loaded", extra={"source": self.source, "reason": str(exc)})
                continue
            total += sent
            log.info("file loaded", extra={"source": self.source, "file": ref.url, "records": sent})
        return total

    async def run(self, stop: asyncio.Event) -> None:
        POLL_LAG.labels(self.source).set_function(lambda: time.time() - self.last_complete)
        while not stop.is_set():
            try:
                await self.sweep()
                self.last_complete = time.time()
                self.sweeps, self.last_error = self.sweeps + 1, None
            except Exception as exc:
                if isinstance(exc, asyncio.CancelledError):
                    raise
                POLL_ERRORS.labels(self.source, type(exc).__name__).inc()
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("file poll failed", extra={"source": self.source})
            try:
                await pause(stop, self.spec.interval.total_seconds())
            except Stopped:
                return
