"""Realtime resume at the seam, under load: a subscriber that disconnects and comes back
with ``after_id`` every second while 5,000 records/s commit ends with exactly the
committed ids, once each, in order per connector."""

from __future__ import annotations

from collections import Counter

import httpx
import orjson
import psycopg
import pytest
import trio
import trio_websocket

from engine.config import Settings
from engine.errors import SourceUnavailable
from engine.transport import Connection, SansIOTransport
from server.serve import Service

from .fake_exchange import FakeExchange

pytestmark = pytest.mark.e2e

TOTAL = 20_000  # four seconds at 5,000/s


def committed_ids(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM websocket_messages ORDER BY id")]


@pytest.mark.parametrize("batch", [False, True])
async def test_resuming_every_second_under_load_misses_and_repeats_nothing(
    service: Service, exchange: FakeExchange, settings: Settings, batch: bool
) -> None:
    ws_base = service.url.replace("http://", "ws://") + "/api/realtime"
    got: Counter[int] = Counter()
    trades: list[int] = []
    last = 0
    sessions = 0
    async with httpx.AsyncClient(base_url=service.url) as client:
        # Everything before the subscriber's first connect is history it starts from.
        created = await client.post(
            "/api/connectors",
            json={"name": "paced", "api_url": exchange.url(f"/paced?rate=5000&count={TOTAL}")},
        )
        cid = created.json()["connector_id"]
        await client.post(f"/api/connectors/{cid}/start")
        with trio.fail_after(60):
            while len(got) < TOTAL:
                query = f"?after_id={last}" + ("&batch=true" if batch else "")
                async with trio_websocket.open_websocket_url(ws_base + query) as ws:
                    sessions += 1
                    with trio.move_on_after(1.0):
                        while True:
                            frame = orjson.loads(await ws.get_message())
                            records = (
                                frame["records"]
                                if frame["type"] == "data_batch"
                                else [frame]
                                if frame["type"] == "data_update"
                                else []
                            )
                            for record in records:
                                got[record["id"]] += 1
                                trades.append(record["data"]["t"])
                                last = max(last, record["id"])
    assert sessions >= 3  # it really did come and go under load
    assert max(got.values()) == 1  # no duplicate at any seam
    assert sorted(got) == committed_ids(settings.postgres_dsn or "")  # no gap
    assert trades == sorted(trades)  # in commit order


async def test_a_position_below_the_retention_floor_is_refused_clearly(
    service: Service, settings: Settings
) -> None:
    with psycopg.connect(settings.postgres_dsn or "") as conn:
        conn.execute("UPDATE record_floor SET id = 500")
    ws_url = service.url.replace("http://", "ws://") + "/api/realtime?after_id=100"
    frames: list[dict[str, object]] = []
    # Our own client transport: trio-websocket leaks its socket when the server closes.
    with trio.fail_after(10):
        async with SansIOTransport().connect(
            ws_url, max_message_bytes=1 << 20, open_timeout=10
        ) as conn:
            with pytest.raises(SourceUnavailable, match="1008"):
                await _read_until_closed(conn, frames)
    [connected, failed] = frames
    assert connected["type"] == "connected"
    assert failed["type"] == "resume_failed"
    assert (failed["after_id"], failed["oldest_available"]) == (100, 500)


async def _read_until_closed(conn: Connection, frames: list[dict[str, object]]) -> None:
    while True:
        frames += [orjson.loads(m) for m in await conn.receive_messages()]


async def test_a_resume_reads_the_database_only_up_to_what_was_published(
    service: Service, exchange: FakeExchange, settings: Settings
) -> None:
    """Two batches commit concurrently, so the database can hold a later batch before the
    earlier one is committed (and both before they are published). A resume reads the
    database only up to the last id the hub published when the client subscribed; the rest
    comes live, in publication order. Here records 11-20 stand for such a batch: committed,
    but (as far as the hub says) not yet published."""
    async with httpx.AsyncClient(base_url=service.url) as client:
        body = {"name": "b", "api_url": exchange.url("/binance?count=20"), "exchange": "binance"}
        cid = (await client.post("/api/connectors", json=body)).json()["connector_id"]
        await client.post(f"/api/connectors/{cid}/start")
        with trio.fail_after(20):
            while len(ids := committed_ids(settings.postgres_dsn or "")) < 20:
                await trio.sleep(0.05)
        await client.post(f"/api/connectors/{cid}/stop")
    hub = service.engine.hub
    assert hub.published_id == ids[-1]
    hub.published_id = ids[9]
    ws_url = service.url.replace("http://", "ws://") + "/api/realtime?after_id=0"
    replayed: list[int] = []
    with trio.fail_after(10):
        async with trio_websocket.open_websocket_url(ws_url) as ws:
            while (frame := orjson.loads(await ws.get_message()))["type"] != "resumed":
                if frame["type"] == "data_update":
                    replayed.append(frame["id"])
    assert replayed == ids[:10]
    assert (frame["replayed"], frame["last_id"]) == (10, ids[9])
