"""``/api/realtime``: filters, batch frames, client actions, the subscriber cap, the test
broadcast, and C1 — a subscriber that never reads is dropped while others get everything
in order."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from functools import partial

import httpx
import orjson
import pytest
import trio
import trio_websocket

from engine.config import Settings
from server.serve import Service, serve

from .conftest import evolve
from .fake_exchange import FakeExchange, binance_trade

pytestmark = pytest.mark.e2e


def ws_url(service: Service, query: str = "") -> str:
    return service.url.replace("http://", "ws://") + "/api/realtime" + query


@pytest.fixture
async def client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        yield http


async def save_trades(client: httpx.AsyncClient, symbols: list[str]) -> None:
    messages = [{"data": orjson.loads(binance_trade(n, s))} for n, s in enumerate(symbols, 1)]
    response = await client.post(
        "/api/websocket/save-batch", json={"messages": messages, "exchange": "binance"}
    )
    assert response.status_code == 201


async def test_filters_batch_mode_and_actions(service: Service, client: httpx.AsyncClient) -> None:
    with trio.fail_after(20):
        async with (
            trio_websocket.open_websocket_url(ws_url(service, "?instrument=ETHUSDT")) as eth,
            trio_websocket.open_websocket_url(ws_url(service, "?batch=true")) as batched,
        ):
            assert await eth.get_message() == '{"type":"connected"}'
            assert await batched.get_message() == '{"type":"connected"}'
            await save_trades(client, ["BTCUSDT", "ETHUSDT", "BTCUSDT", "ETHUSDT"])
            events = [orjson.loads(await eth.get_message()) for _ in range(2)]
            assert {e["instrument"] for e in events} == {"ETHUSDT"}
            frame = orjson.loads(await batched.get_message())
            assert frame["type"] == "data_batch"
            assert [r["data"]["t"] for r in frame["records"]] == [1, 2, 3, 4]

            await eth.send_message('{"action": "ping"}')
            assert orjson.loads(await eth.get_message()) == {"type": "pong"}
            await eth.send_message('{"action": "subscribe", "instrument": "BTCUSDT"}')
            ack = orjson.loads(await eth.get_message())
            assert (ack["type"], ack["instrument"]) == ("subscribed", "BTCUSDT")
            await eth.send_message('{"action": "dance"}')
            assert orjson.loads(await eth.get_message())["type"] == "error"
            await eth.send_message("not json")
            assert orjson.loads(await eth.get_message())["type"] == "error"
            await save_trades(client, ["ETHUSDT", "BTCUSDT"])
            event = orjson.loads(await eth.get_message())
            assert event["instrument"] == "BTCUSDT"


async def test_test_broadcast_counts_receivers(service: Service, client: httpx.AsyncClient) -> None:
    with trio.fail_after(20):
        async with (
            trio_websocket.open_websocket_url(ws_url(service)) as one,
            trio_websocket.open_websocket_url(ws_url(service)) as two,
        ):
            await one.get_message()
            await two.get_message()
            response = await client.post("/api/realtime/test", json={"message": "hello"})
            assert response.json() == {"delivered": 2, "subscribers": 2}
            for ws in (one, two):
                event = orjson.loads(await ws.get_message())
                assert (event["type"], event["message"]) == ("test", "hello")
    bad = await client.post("/api/realtime/test", json={"message": "x", "extra": 1})
    assert bad.status_code == 422


UPGRADE = (
    b"Host: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def refused_upgrade(service: Service, path: str) -> tuple[int, dict[str, object]]:
    """Ask for a WebSocket upgrade; return the HTTP status and JSON body of the refusal."""
    host, port = service.url.removeprefix("http://").split(":")
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(b"GET " + path.encode() + b" HTTP/1.1\r\n" + UPGRADE)
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = await stream.receive_some()
            if not chunk:
                break
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body)


async def test_subscriber_cap_refuses_the_upgrade(
    nursery: trio.Nursery, settings: Settings
) -> None:
    service: Service = await nursery.start(
        partial(serve, evolve(settings, realtime_max_subscribers=1), handle_signals=False)
    )
    with trio.fail_after(20):
        async with trio_websocket.open_websocket_url(ws_url(service)) as first:
            await first.get_message()
            status, body = await refused_upgrade(service, "/api/realtime")
            assert status == 503
            assert "subscribers" in str(body["detail"])
    service.stop()
    await service.engine.stopped.wait()


async def test_bad_subscription_query_is_refused(service: Service) -> None:
    for query in ("?colour=red", "?batch=maybe", "?instrument=" + "x" * 300):
        with trio.fail_after(10):
            status, body = await refused_upgrade(service, "/api/realtime" + query)
        assert status == 422, query
        assert body["detail"]


async def start_binance(client: httpx.AsyncClient, exchange: FakeExchange, query: str) -> str:
    """Create and start a connector to the fake exchange's Binance feed; its id."""
    body = {"name": "b", "api_url": exchange.url(f"/binance?{query}"), "exchange": "binance"}
    connector_id: str = (await client.post("/api/connectors", json=body)).json()["connector_id"]
    await client.post(f"/api/connectors/{connector_id}/start")
    return connector_id


async def never_reading_subscriber(url: str, query: str = "") -> trio.SocketStream:
    """A client that upgrades and then reads nothing (until the test does), with a tiny
    receive buffer."""
    host, port = url.removeprefix("http://").split(":")
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    await stream.send_all(
        f"GET /api/realtime{query} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n".encode()
        + b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    return stream


async def test_c1_slow_subscriber_is_dropped_others_get_everything_in_order(
    nursery: trio.Nursery, settings: Settings, exchange: FakeExchange
) -> None:
    total = 20_000
    service: Service = await nursery.start(
        partial(serve, evolve(settings, realtime_max_lag=500), handle_signals=False)
    )
    slow = await never_reading_subscriber(service.url)
    received: list[int] = []
    with trio.fail_after(90):
        async with (
            httpx.AsyncClient(base_url=service.url) as client,
            trio_websocket.open_websocket_url(ws_url(service, "?batch=true")) as fast,
        ):
            await fast.get_message()
            while service.engine.hub.statistics().subscribers < 2:
                await trio.sleep(0.01)
            connector_id = await start_binance(client, exchange, f"count={total}")
            while len(received) < total:
                frame = orjson.loads(await fast.get_message())
                received.extend(r["data"]["t"] for r in frame["records"])
            status = (await client.get(f"/api/connectors/{connector_id}/status")).json()
    assert received == list(range(1, total + 1))  # every record, in order, once
    assert status["records_stored"] == total
    assert service.engine.hub.statistics().lagged_disconnects == 1
    await slow.aclose()
    service.stop()
    await service.engine.stopped.wait()


def _server_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Take every whole server frame (unmasked) off the front of ``buffer``."""
    frames: list[tuple[int, bytes]] = []
    while len(buffer) >= 2:
        length, start = buffer[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(buffer[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(buffer[2:10], "big"), 10
        if len(buffer) < start + length:
            break
        frames.append((buffer[0], bytes(buffer[start : start + length])))
        del buffer[: start + length]
    return frames


async def test_frames_the_hub_writes_itself_stay_whole_and_in_order_for_a_slow_reader(
    nursery: trio.Nursery, service: Service, exchange: FakeExchange
) -> None:
    """The hub writes a batch subscriber's frames to its socket itself when nothing else is
    on its way there. A client with a tiny receive buffer that reads nothing for a while
    makes those writes partial: the rest must go out before anything else, the frames
    queued meanwhile after it, and a pong the client asked for between them — every
    frame whole, every record once and in order."""
    total = 5_000
    hub = service.engine.hub
    direct_before = hub.statistics().direct_batches
    stream = await never_reading_subscriber(service.url, "?batch=true")
    buffer = bytearray()
    received: list[int] = []
    with trio.fail_after(60):
        while b"\r\n\r\n" not in buffer:
            buffer += await stream.receive_some(65536)
        del buffer[: buffer.index(b"\r\n\r\n") + 4]
        while not _server_frames(buffer):  # {"type":"connected"}
            buffer += await stream.receive_some(65536)
        async with httpx.AsyncClient(base_url=service.url) as client:
            await start_binance(client, exchange, f"count={total}&rate=50000")
            ping = b'{"action":"ping"}'
            pongs = pauses = 0
            while len(received) < total:
                if len(received) >= 400 * pauses:
                    # Not reading: the hub's writes fill the socket, then frames queue.
                    pauses += 1
                    while not hub.statistics().queued_records and hub.records_in < total:
                        await trio.sleep(0.005)
                    if pauses == 2:
                        await stream.send_all(
                            b"\x81" + bytes((0x80 | len(ping),)) + b"\0\0\0\0" + ping
                        )
                buffer += await stream.receive_some(4096)
                for opcode, payload in _server_frames(buffer):
                    if opcode == 0x89:  # hypercorn's keepalive ping
                        continue
                    assert opcode == 0x81, opcode  # whole text frames only
                    message = orjson.loads(payload)
                    if message["type"] == "pong":
                        pongs += 1
                    else:
                        assert message["type"] == "data_batch", message
                        received.extend(r["data"]["t"] for r in message["records"])
    assert received == list(range(1, total + 1))
    assert pongs == 1
    assert hub.statistics().direct_batches > direct_before
    await stream.aclose()
