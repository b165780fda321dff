"""Poll a JSON HTTP API: pagination, an incremental parameter, backoff that honours Retry-After.

Cursor (``http/<source>``)::

    {"since": <incremental value sent in this sweep's requests>,
     "max_seen": <largest incremental_path value delivered so far>,
     "position": {"cursor": ...} | {"url": ...} | {"page": n} | null}

It is saved after each page's records are acknowledged, so a restart continues with the next
page of the interrupted sweep. When a sweep ends, ``since`` becomes ``max_seen`` and, with an
incremental parameter, the position is cleared (the next sweep starts from the first page of
what changed). Without one, the position of the last page is kept and the next sweep re-reads
that page onwards (a feed); repeats are dropped downstream by event_id.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin

import httpx

from connectors.cursors import CursorStore
from connectors.metrics import POLL_ERRORS, POLL_LAG
from connectors.pull.emitter import Emitter
from connectors.records import lookup
from hosepipe.config import HttpPull

log = logging.getLogger(__name__)


class PollFailed(Exception):
    """The API answered with an error that retrying will not fix (4xx other than 429)."""


class Stopped(Exception):
    """The poller was asked to stop while waiting."""


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` unless ``stop`` is set first (then raise :class:`Stopped`)."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return
    raise Stopped


# --------------------------------------------------------------------------- pure core


@dataclass(frozen=True)
class Request:
    url: str
    params: dict[str, str]


def build_request(spec: HttpPull, position: dict[str, Any] | None, since: Any) -> Request:
    """The request for ``position`` of a sweep (``None`` = first page)."""
    params = dict(spec.params)
    if spec.incremental_param and since is not None:
        params[spec.incremental_param] = str(since)
    pagination = spec.pagination
    if pagination.page_size_param and pagination.page_size:
        params[pagination.page_size_param] = str(pagination.page_size)
    if position and "url" in position:
        return Request(str(position["url"]), {})  # a next link carries its own query
    if pagination.kind == "cursor" and position and position.get("cursor") is not None:
        params[pagination.cursor_param] = str(position["cursor"])
    if pagination.kind == "page":
        params[pagination.page_param] = str((position or {}).get("page", 1))
    return Request(spec.url, params)


def records_of(spec: HttpPull, document: Any) -> list[dict[str, Any]]:
    """The records of one response; a response without the list is an error."""
    found = lookup(document, spec.records_path)
    if found is None:
        return []
    if not isinstance(found, list):
        raise PollFailed(f"{spec.records_path} in the response is not a list")
    return [r for r in found if isinstance(r, dict)]


def next_position(
    spec: HttpPull,
    request: Request,
    position: dict[str, Any] | None,
    document: Any,
    records: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """Where the next page is, or ``None`` when this sweep is complete."""
    pagination = spec.pagination
    if pagination.kind == "cursor":
        cursor = lookup(document, pagination.cursor_path or "$.next_cursor")
        if cursor in (None, "") or not records or cursor == (position or {}).get("cursor"):
            return None
        return {"cursor": cursor}
    if pagination.kind == "next_link":
        link = lookup(document, pagination.next_link_path or "$.next")
        if not link or not isinstance(link, str):
            return None
        return {"url": urljoin(request.url, link)}
    if pagination.kind == "page":
        page = int((position or {}).get("page", 1))
        if not records or (pagination.page_size and len(records) < pagination.page_size):
            return None
        return {"page": page + 1}
    return None


def newest(spec: HttpPull, current: Any, records: list[dict[str, Any]]) -> Any:
    """The largest ``incremental_path`` value among ``records`` and ``current``."""
    if not spec.incremental_path:
        return current
    values = [v for r in records if (v := lookup(r, spec.incremental_path)) is not None]
    if current is not None:
        values.append(current)
    if not values:
        return None
    try:
        return max(values)
    except TypeError:  # mixed types: compare as text
        return max(values, key=str)


def retry_delay(headers: httpx.Headers | dict[str, str], attempt: int, max_backoff: float) -> float:
    """Seconds to wait: the server's Retry-After (seconds or HTTP date) if given, else
    exponential backoff with jitter, never above ``max_backoff``."""
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value:
        value = value.strip()
        if value.isdigit():
            return min(float(value), max_backoff)
        try:
            when = parsedate_to_datetime(value)
            return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), max_backoff)
        except (TypeError, ValueError):
            pass
    base = min(max_backoff, 2.0 ** min(attempt, 16))
    return base * (0.5 + random.random() / 2)


# --------------------------------------------------------------------------- I/O shell


class HttpPoller:
    """One source's HTTP poller."""

    def __init__(self, source: str, spec: HttpPull, emitter: Emitter, cursors: CursorStore) -> None:
        self.source = source
        self.spec = spec
        self.emitter = emitter
        self.cursors = cursors
        self.key = f"http/{source}"
        self.last_complete = time.time()
        self.sweeps = 0
        self.last_error: str | None = None

    async def _get(self, client: httpx.AsyncClient, request: Request, stop: asyncio.Event) -> Any:
        attempt = 0
        while True:
            headers: httpx.Headers | dict[str, str] = {}
            try:
                response = await client.get(request.url, params=request.params or None)
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
                POLL_ERRORS.labels(self.source, "connection").inc()
            else:
                if response.status_code < 300:
                    return response.json()
                if response.status_code != 429 and response.status_code < 500:
                    POLL_ERRORS.labels(self.source, f"http_{response.status_code}").inc()
                    raise PollFailed(
                        f"GET {request.url} answered {response.status_code}: {response.text[:200]}"
                    )
                reason, headers = f"HTTP {response.status_code}", response.headers
                POLL_ERRORS.labels(self.source, f"http_{response.status_code}").inc()
            delay = retry_delay(headers, attempt, self.spec.max_backoff.total_seconds())
            self.last_error = f"GET {request.url}: {reason}, retrying (attempt {attempt + 1})"
            log.warning(
                "poll request failed, retrying",
                extra={"source": self.source, "url": request.url, "reason": reason, "delay": delay},
            )
            attempt += 1
            await pause(stop, delay)

    async def sweep(self, client: httpx.AsyncClient, stop: asyncio.Event) -> int:
        """Fetch pages until the sweep is complete; returns the number of records."""
        state = self.cursors.get(self.key) or {}
        since, max_seen = state.get("since"), state.get("max_seen")
        position = state.get("position")
        total = 0
        while not stop.is_set():
            request = build_request(self.spec, position, since)
            document = await self._get(client, request, stop)
            records = records_of(self.spec, document)
            if records:
                await self.emitter.emit(records)
            total += len(records)
            max_seen = newest(self.spec, max_seen, records)
            following = next_position(self.spec, request, position, document, records)
            if following is None:
                keep = None if self.spec.incremental_param else position
                await self.cursors.save(
                    self.key, {"since": max_seen, "max_seen": max_seen, "position": keep}
                )
                return total
            position = following
            await self.cursors.save(
                self.key, {"since": since, "max_seen": max_seen, "position": position}
            )
        return total

    async def run(self, stop: asyncio.Event) -> None:
        POLL_LAG.labels(self.source).set_function(lambda: time.time() - self.last_complete)
        timeout = self.spec.timeout.total_seconds()
        async with httpx.AsyncClient(
            headers=self.spec.headers, timeout=timeout, follow_redirects=True
        ) as client:
            while not stop.is_set():
                try:
                    count = await self.sweep(client, stop)
                    self.last_complete = time.time()
                    self.sweeps, self.last_error = self.sweeps + 1, None
                    log.info("poll sweep complete", extra={"source": self.source, "records": count})
                except PollFailed as exc:
                    self.last_error = str(exc)
                    log.error("poll failed", extra={"source": self.source, "reason": str(exc)})
                except Stopped:
                    return
                try:
                    await pause(stop, self.spec.interval.total_seconds())
                except Stopped:
                    return
