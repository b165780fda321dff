"""Live events for ``eventAdded``: LISTEN hosepipe_events, find what the load wrote, fan out.

The selector sends ``NOTIFY hosepipe_events`` with a :class:`hosepipe.db.LoadNotice` after each
committed load. The notice carries counts and the occurred_at window, not event ids (a NOTIFY
payload holds at most 8000 bytes). So the hub finds the rows a load wrote by their inserting
transaction id (``xmin``): rows whose xmin is at or above the snapshot horizon taken at the
previous notice, inside the notice's occurred_at window. (Transaction ids of savepoints the
loader uses are allocated after that horizon too, so they are covered.)

Delivery is at least once: an upsert that rewrites an existing event delivers it again, and
one hub per API process LISTENs on a single connection (subscribers share it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import orjson
from prometheus_client import Counter, Gauge
from sqlalchemy import BigInteger, String, cast, literal_column, select, text
from sqlalchemy.engine import make_url

from api.events import EVENT_COLUMNS, EventCriteria, where_clauses
from api.store import Store
from hosepipe.db import NOTIFY_CHANNEL, events
from hosepipe.settings import Settings

log = logging.getLogger(__name__)

SUBSCRIBERS = Gauge("hosepipe_api_subscriptions", "Open eventAdded subscriptions.")
NOTICES = Counter("hosepipe_api_load_notices_total", "NOTIFY hosepipe_events received.")
DROPPED = Counter(
    "hosepipe_api_live_batches_dropped_total", "Batches dropped for slow subscribers."
)

ID_CHUNK = 1000
QUEUE_BATCHES = 100
XID_MODULUS = 2**32


def _xmin() -> Any:
    return cast(cast(literal_column("events.xmin"), String), BigInteger)


def parse_notice(payload: str) -> dict[str, Any]:
    """The notice as a dict; an unparsable payload counts as 'something changed'."""
    try:
        notice = orjson.loads(payload) if payload else {}
    except orjson.JSONDecodeError:
        return {}
    return notice if isinstance(notice, dict) else {}


def notice_window(notice: dict[str, Any]) -> tuple[datetime, datetime] | None:
    """The occurred_at interval a notice covers, when it says."""
    try:
        low, high = notice.get("min_occurred_at"), notice.get("max_occurred_at")
        if low and high:
            return datetime.fromisoformat(low), datetime.fromisoformat(high)
    except (TypeError, ValueError):
        pass
    return None


def touches_events(notice: dict[str, Any]) -> bool:
    """False when the notice says the events table got no rows."""
    count = notice.get("count")
    if isinstance(count, int) and count == 0:
        tables = notice.get("tables")
        return isinstance(tables, dict) and bool(tables.get("events"))
    return True


class LiveHub:
    """One LISTEN connection per process; subscribers receive batches of new event ids."""

    def __init__(self, settings: Settings, store: Store) -> None:
        url = make_url(settings.database_url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self.store = store
        self._subscribers: set[asyncio.Queue[list[str]]] = set()
        self._task: asyncio.Task[None] | None = None
        self._mark: int | None = None
        self._last_round: set[tuple[str, int]] = set()
        self.listening = asyncio.Event()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="live-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _horizon(self) -> int:
        async def xmin(conn: Any) -> Any:
            return await conn.scalar(
                text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            )

        value = await self.store.read(xmin)
        return int(value) % XID_MODULUS

    async def _run(self) -> None:
        import psycopg

        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    if self._mark is None:
                        self._mark = await self._horizon()
                    else:  # reconnected: catch up on anything loaded meanwhile
                        await self._on_notice({})
                    self.listening.set()
                    backoff = 0.5
                    async for notify in conn.notifies():
                        NOTICES.inc()
                        await self._on_notice(parse_notice(notify.payload))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.listening.clear()
                log.warning("LISTEN %s failed, retrying in %.1fs: %s", NOTIFY_CHANNEL, backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _on_notice(self, notice: dict[str, Any]) -> None:
        if not touches_events(notice) or not self._subscribers:
            self._mark = await self._horizon()
            return
        next_mark = await self._horizon()
        stmt = select(events.c.event_id, _xmin().label("xmin"))
        window = notice_window(notice)
        if window is not None:
            stmt = stmt.where(events.c.occurred_at.between(window[0], window[1]))
        stmt = stmt.where(_xmin() >= (self._mark or 0))
        rows = await self.store.rows(stmt.order_by(events.c.occurred_at, events.c.event_id))
        seen = {(r.event_id, int(r.xmin)) for r in rows}
        ids = [r.event_id for r in rows if (r.event_id, int(r.xmin)) not in self._last_round]
        self._last_round = seen
        self._mark = next_mark
        if ids:
            self._broadcast(ids)

    def _broadcast(self, ids: list[str]) -> None:
        for queue in list(self._subscribers):
            if queue.full():
                DROPPED.inc()
                log.warning("eventAdded subscriber too slow; dropped its oldest batch")
                queue.get_nowait()
            queue.put_nowait(ids)

    async def follow(self, criteria: EventCriteria) -> AsyncIterator[Any]:
        """Rows matching ``criteria`` as they are loaded, until the caller stops iterating."""
        await self.start()
        queue: asyncio.Queue[list[str]] = asyncio.Queue(maxsize=QUEUE_BATCHES)
        self._subscribers.add(queue)
        SUBSCRIBERS.inc()
        try:
            while True:
                ids = await queue.get()
                for chunk in _chunks(ids, ID_CHUNK):
                    stmt = (
                        select(*EVENT_COLUMNS)
                        .where(events.c.event_id.in_(chunk), *where_clauses(criteria))
                        .order_by(events.c.occurred_at, events.c.event_id)
                    )
                    for row in await self.store.rows(stmt):
                        yield row
        finally:
            self._subscribers.discard(queue)
            SUBSCRIBERS.dec()


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
