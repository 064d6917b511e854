"""The WebSocket connector actor against the local fake exchange."""

from __future__ import annotations

import pytest
import trio

from engine.backoff import Backoff
from engine.models import ConnectorSpec, SourceBatch
from engine.transport import SansIOTransport, Transport, TrioWebsocketTransport
from engine.ws_connector import WebSocketConnector

from .fake_exchange import FakeExchange


def spec(url: str, subscribe: list[object]) -> ConnectorSpec:
    return ConnectorSpec(
        connector_id="conn_test",
        name="test",
        api_url=url,
        protocol="websocket",
        exchange="binance",
        subscribe_messages=subscribe,
    )


@pytest.mark.parametrize("transport", [SansIOTransport, TrioWebsocketTransport])
async def test_reconnects_and_resends_subscriptions(
    nursery: trio.Nursery, transport: type[Transport]
) -> None:
    exchange: FakeExchange = await nursery.start(FakeExchange().run)
    send, receive = trio.open_memory_channel[SourceBatch](100)
    connector = WebSocketConnector(
        spec(exchange.url("/close-after?count=10"), [{"op": "subscribe", "n": 1}, "ping"]),
        send,
        transport(),
        backoff=Backoff(base=0.01, cap=0.05),
    )
    frames: list[bytes | str] = []
    with trio.fail_after(20):
        nursery.start_soon(connector.run)
        async for batch in receive:
            assert batch.connector_id == "conn_test"
            assert len(batch.frames) == len(batch.received_at)
            frames.extend(batch.frames)
            if len(frames) >= 30:
                break
    connector.request_stop()
    stats = connector.statistics()
    assert stats.reconnects >= 2
    assert exchange.connections >= 3
    # Both subscribe messages went out on every connection, objects as JSON, strings as is.
    assert exchange.received[:2] == ['{"op":"subscribe","n":1}', '{"op":"subscribe","n":1}']
    assert stats.messages_received >= 30
    assert stats.errors >= 2
    assert stats.last_error is not None
    assert "closed by the source" in stats.last_error


async def test_full_buffer_becomes_a_counted_gap_and_socket_keeps_draining(
    nursery: trio.Nursery,
) -> None:
    exchange: FakeExchange = await nursery.start(FakeExchange().run)
    send, receive = trio.open_memory_channel[SourceBatch](0)  # nobody reads: downstream stalled
    connector = WebSocketConnector(
        spec(exchange.url("/binance?count=2000"), []),
        send,
        SansIOTransport(),
        buffer_limit_bytes=20_000,
    )
    nursery.start_soon(connector.run)
    with trio.fail_after(20):
        while connector.statistics().messages_received < 2000:
            await trio.sleep(0.01)
    stats = connector.statistics()
    assert stats.gap is not None
    assert stats.buffered_bytes <= 20_000
    # Nothing unaccounted: buffered + handed to the (blocked) send + gap == received.
    first = await receive.receive()
    accounted = stats.gap.count + stats.buffered_messages + len(first.frames)
    assert accounted == stats.messages_received
    assert stats.gap.first_at <= stats.gap.last_at
    connector.request_stop()


async def test_stop_forwards_what_was_buffered(nursery: trio.Nursery) -> None:
    exchange: FakeExchange = await nursery.start(FakeExchange().run)
    send, receive = trio.open_memory_channel[SourceBatch](1000)
    connector = WebSocketConnector(
        spec(exchange.url("/binance?count=500"), []), send, SansIOTransport()
    )
    done = trio.Event()

    async def run() -> None:
        await connector.run()
        done.set()

    nursery.start_soon(run)
    with trio.fail_after(20):
        while connector.statistics().messages_received < 500:
            await trio.sleep(0.01)
        connector.request_stop()
        await done.wait()
    send.close()
    total = sum([len(batch.frames) async for batch in receive])
    assert total == 500
    assert connector.statistics().status == "stopped"


async def test_buffered_messages_keep_their_order_times_and_batch_bounds() -> None:
    """A backlog is kept one joined chunk per receive; taking it out gives the same
    messages, in order, with each receive's time, cut at any batch bound. A later receive
    never overtakes a buffered one by the direct hand-on (the forwarder may still be
    asleep with a chunk waiting)."""
    send, receive = trio.open_memory_channel[SourceBatch](1)
    connector = WebSocketConnector(spec("ws://127.0.0.1:9/", []), send, SansIOTransport())
    connector._forward_idle = True  # as while the forwarding task waits
    send.send_nowait(SourceBatch("x", None, [], [], None))  # the channel is full
    connector._accept([b"a", b"bb", b""])
    await receive.receive()  # room again, but "a", "bb", "" are still buffered
    connector._accept([b"ccc"])
    assert receive.statistics().current_buffer_used == 0  # "ccc" did not overtake them
    assert connector.statistics().buffered_messages == 4
    assert connector.statistics().buffered_bytes == 6
    frames, times = connector._take_buffered(2)
    assert frames == [b"a", b"bb"]
    rest, later = connector._take_buffered(500)
    assert rest == [b"", b"ccc"]
    assert times[0] == times[1] == later[0] <= later[1]
    assert connector.statistics().buffered_messages == 0
    # With nothing buffered, a receive goes straight on.
    connector._accept([b"dd"])
    assert (await receive.receive()).frames == [b"dd"]
