"""Both WebSocket transports against trio-websocket's server on loopback, an
independent peer."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
import trio_websocket

from engine.errors import SourceUnavailable
from engine.transport import SansIOTransport, SocketReader, Transport, TrioWebsocketTransport

Handler = Callable[[trio_websocket.WebSocketConnection], Awaitable[None]]


async def start_server(nursery: trio.Nursery, handler: Handler) -> str:
    async def handle(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await handler(ws)

    server = await nursery.start(trio_websocket.serve_websocket, handle, "127.0.0.1", 0, None)
    return f"ws://127.0.0.1:{server.port}/feed?x=1"


@pytest.fixture(params=[SansIOTransport, TrioWebsocketTransport], ids=["sansio", "trio-websocket"])
def transport(request: pytest.FixtureRequest) -> Transport:
    made: Transport = request.param()
    return made


async def receive_n(conn: object, n: int) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < n:
        out.extend(await conn.receive_messages())  # type: ignore[attr-defined]
    return out


async def test_text_round_trip_and_binary_is_counted(
    nursery: trio.Nursery, transport: Transport
) -> None:
    async def handler(ws: trio_websocket.WebSocketConnection) -> None:
        hello = await ws.get_message()
        await ws.send_message(b"\x00\x01binary")
        for i in range(50):
            await ws.send_message(f'{{"echo":"{hello}","i":{i},"é":"ü"}}')
        await trio.sleep_forever()

    url = await start_server(nursery, handler)
    with trio.fail_after(10):
        async with transport.connect(url, max_message_bytes=1 << 20, open_timeout=5) as conn:
            await conn.send_text("hi")
            messages = await receive_n(conn, 50)
            assert messages[0] == '{"echo":"hi","i":0,"é":"ü"}'.encode()
            assert messages[-1].startswith(b'{"echo":"hi","i":49')
            assert conn.binary_messages == 1


async def test_server_pings_are_answered(nursery: trio.Nursery, transport: Transport) -> None:
    pongs = trio.Event()

    async def handler(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.ping(b"are-you-there")  # returns when the matching pong arrives
        pongs.set()
        await ws.send_message("after-ping")
        await trio.sleep_forever()

    url = await start_server(nursery, handler)
    with trio.fail_after(10):
        async with transport.connect(url, max_message_bytes=1 << 20, open_timeout=5) as conn:
            assert await conn.receive_messages() == [b"after-ping"]
    assert pongs.is_set()


async def test_server_close_raises_source_unavailable(
    nursery: trio.Nursery, transport: Transport
) -> None:
    async def handler(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.send_message("last")
        await ws.aclose(code=1001, reason="bye")

    url = await start_server(nursery, handler)
    with trio.fail_after(10):
        async with transport.connect(url, max_message_bytes=1 << 20, open_timeout=5) as conn:
            received = await conn.receive_messages()
            assert received == [b"last"]
            with pytest.raises(SourceUnavailable):
                await conn.receive_messages()


async def test_refused_connection_raises_source_unavailable(transport: Transport) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        with trio.fail_after(10), pytest.raises(SourceUnavailable):
            async with transport.connect(
                f"ws://127.0.0.1:{port}/", max_message_bytes=1 << 20, open_timeout=5
            ):
                pass


async def test_sansio_reassembles_fragmented_messages(nursery: trio.Nursery) -> None:
    big = '{"payload":"' + "x" * 200_000 + '"}'

    async def handler(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.send_message(big)  # larger than one read: arrives in many chunks
        await trio.sleep_forever()

    url = await start_server(nursery, handler)
    with trio.fail_after(10):
        async with SansIOTransport().connect(
            url, max_message_bytes=1 << 20, open_timeout=5
        ) as conn:
            assert await receive_n(conn, 1) == [big.encode()]


async def test_oversized_message_closes_the_connection(nursery: trio.Nursery) -> None:
    async def handler(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.send_message("y" * 5000)
        await trio.sleep_forever()

    url = await start_server(nursery, handler)
    with trio.fail_after(10):
        async with SansIOTransport().connect(url, max_message_bytes=1000, open_timeout=5) as conn:
            with pytest.raises(SourceUnavailable):
                await conn.receive_messages()


async def test_handshake_carries_the_connectors_headers(
    nursery: trio.Nursery, transport: Transport
) -> None:
    seen: list[dict[str, str]] = []

    async def handle(request: trio_websocket.WebSocketRequest) -> None:
        seen.append({k.decode().lower(): v.decode() for k, v in request.headers})
        ws = await request.accept()
        await ws.send_message("ok")
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await trio.sleep_forever()

    server = await nursery.start(trio_websocket.serve_websocket, handle, "127.0.0.1", 0, None)
    url = f"ws://127.0.0.1:{server.port}/feed"
    with trio.fail_after(10):
        async with transport.connect(
            url, max_message_bytes=1 << 20, open_timeout=5, headers={"X-Api-Key": "k-1"}
        ) as conn:
            assert await conn.receive_messages() == [b"ok"]
    assert seen[0]["x-api-key"] == "k-1"


async def test_deliver_hands_on_every_message_in_order_and_answers_pings(
    nursery: trio.Nursery, transport: Transport
) -> None:
    pinged = trio.Event()

    async def handler(ws: trio_websocket.WebSocketConnection) -> None:
        for i in range(20):
            await ws.send_message(f'{{"i":{i}}}')
        await ws.ping(b"still-there")  # returns when the pong arrives
        pinged.set()
        for i in range(20, 40):
            await ws.send_message(f'{{"i":{i}}}')
        await ws.aclose(code=1001, reason="going away")

    url = await start_server(nursery, handler)
    got: list[bytes] = []
    with trio.fail_after(10):
        async with transport.connect(url, max_message_bytes=1 << 20, open_timeout=5) as conn:
            with pytest.raises(SourceUnavailable, match="1001"):
                await conn.deliver(got.extend)
    assert pinged.is_set()
    assert got == [f'{{"i":{i}}}'.encode() for i in range(40)]


async def test_plain_tcp_connections_share_one_socket_reader(nursery: trio.Nursery) -> None:
    """Every plain-TCP connection's messages are read by the one shared reader task, not by
    the connection's own task; a delivery cancelled by its caller (the connector's timers)
    leaves the reader's set, and the connection then reads in its own task as before."""
    go = trio.Event()

    async def handler(ws: trio_websocket.WebSocketConnection) -> None:
        await go.wait()
        for i in range(10):
            await ws.send_message(f"{i}")
        await ws.get_message()  # the client's "more", sent after its delivery was cancelled
        await ws.send_message("after")
        await trio.sleep_forever()

    url = await start_server(nursery, handler)
    reader = SocketReader.current()
    assert reader is not None
    reads_before = reader.reads
    got: list[list[bytes]] = [[] for _ in range(20)]
    with trio.fail_after(10):
        async with contextlib.AsyncExitStack() as stack:
            conns = [
                await stack.enter_async_context(
                    SansIOTransport().connect(url, max_message_bytes=1 << 20, open_timeout=5)
                )
                for _ in range(20)
            ]
            async with trio.open_nursery() as readers:
                for conn, out in zip(conns, got, strict=True):
                    readers.start_soon(conn.deliver, out.extend)
                await trio.testing.wait_all_tasks_blocked()
                go.set()
                while any(len(out) < 10 for out in got):
                    await trio.sleep(0.01)
                readers.cancel_scope.cancel()
            assert reader.reads - reads_before >= 20
            assert not reader._handlers  # every cancelled delivery left the set
            for conn in conns:
                await conn.send_text("more")
                assert await conn.receive_messages() == [b"after"]
    assert all(out == [f"{i}".encode() for i in range(10)] for out in got)


async def test_a_failing_sink_is_raised_in_the_connections_own_task(
    nursery: trio.Nursery,
) -> None:
    async def handler(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.send_message("one")
        await trio.sleep_forever()

    def sink(messages: list[bytes]) -> None:
        raise RuntimeError("sink failed")

    url = await start_server(nursery, handler)
    with trio.fail_after(10):
        async with SansIOTransport().connect(
            url, max_message_bytes=1 << 20, open_timeout=5
        ) as conn:
            with pytest.raises(RuntimeError, match="sink failed"):
                await conn.deliver(sink)
        # The reader task is unharmed: another connection is still served.
        async with SansIOTransport().connect(
            url, max_message_bytes=1 << 20, open_timeout=5
        ) as conn:
            got: list[bytes] = []
            with trio.CancelScope() as received:

                def take(messages: list[bytes]) -> None:
                    got.extend(messages)
                    received.cancel()

                await conn.deliver(take)
            assert got == [b"one"]
