"""eventAdded over graphql-transport-ws, fed by NOTIFY hosepipe_events (the selector's format)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest
from gql import Client, gql
from gql.transport.websockets import WebsocketsTransport

from tests.integration.api.api_support import ApiDatabase, RunningApi, make_event

pytestmark = pytest.mark.integration

SUBSCRIPTION = """subscription { eventAdded(filter: {source: "orders"}) {
  eventId source eventType payload } }"""


def selector_notice(rows: list[dict[str, Any]]) -> str:
    """The payload ``selector/load.py`` sends (hosepipe.db.LoadNotice)."""
    times = [r["occurred_at"] for r in rows]
    return orjson.dumps(
        {
            "count": len(rows),
            "tables": {"events": len(rows)},
            "files": 1,
            "min_occurred_at": min(times).isoformat().replace("+00:00", "Z"),
            "max_occurred_at": max(times).isoformat().replace("+00:00", "Z"),
            "shard": "0/1",
        }
    ).decode()


async def wait_listening(api: RunningApi) -> None:
    deadline = time.monotonic() + 15
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if (await client.get(f"{api.url}/healthz")).json().get("live_listening"):
                return
            await asyncio.sleep(0.05)
    raise AssertionError("the API never started listening on hosepipe_events")


async def test_subscription_receives_loaded_events(api: RunningApi, api_db: ApiDatabase) -> None:
    api_db.add_events([make_event(i) for i in range(4)])  # loaded before: never delivered
    transport = WebsocketsTransport(
        url=api.ws, subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL]
    )
    async with Client(transport=transport) as session:
        received: list[dict[str, Any]] = []

        async def consume() -> None:
            async for result in session.subscribe(gql(SUBSCRIPTION)):
                received.append(result["eventAdded"])
                if len(received) == 2:
                    return

        task = asyncio.create_task(consume())
        await wait_listening(api)
        new = [make_event(i, event_id=f"live{i}") for i in range(100, 104)]  # 2 orders, 2 clicks
        await asyncio.to_thread(api_db.add_events, new)
        await asyncio.to_thread(api_db.notify, selector_notice(new))
        await asyncio.wait_for(task, timeout=15)
    assert [r["eventId"] for r in received] == ["live100", "live102"]
    assert all(r["source"] == "orders" for r in received)
    assert received[0]["payload"]["id"] == "o100"


async def test_subscription_requires_credentials(start_api: Any) -> None:
    key = "live-test-key-0123456789"
    api = start_api(auth="api_key", api_keys=[{"key": key}])
    rejected = WebsocketsTransport(
        url=api.ws,
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        init_payload={"Authorization": "Bearer wrong-key-0123456789"},
    )
    with pytest.raises(Exception):  # noqa: B017 - gql raises a transport error, type varies
        async with Client(transport=rejected) as session:
            await session.execute(gql("{ sources { name } }"))
    accepted = WebsocketsTransport(
        url=api.ws,
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        init_payload={"Authorization": f"Bearer {key}"},
    )
    async with Client(transport=accepted) as session:
        assert await session.execute(gql("{ sources { name } }")) == {"sources": []}
