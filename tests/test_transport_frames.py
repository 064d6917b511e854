"""The default transport's fast frame path against byte streams cut at every size.

Frames come from the ``websockets`` server protocol (an independent encoder) and reach the
client in chunks of 1, 2, 3, … bytes, so every header, extended length and payload is split
somewhere; what the client returns must not depend on where.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from engine.errors import SourceUnavailable
from engine.transport import SansIOTransport


async def serve_script(
    stream: trio.abc.Stream,
    protocol: ServerProtocol,
    script: list[tuple[str, bytes, bool]],
    chunk: int,
    pongs: list[bytes],
) -> None:
    """Accept, then send the script's frames cut into ``chunk``-byte pieces; note pongs."""
    while True:
        protocol.receive_data(await stream.receive_some())
        requests = [e for e in protocol.events_received() if isinstance(e, Request)]
        if requests:
            protocol.send_response(protocol.accept(requests[0]))
            break
    for kind, payload, fin in script:
        if kind == "text":
            protocol.send_text(payload, fin=fin)
        elif kind == "cont":
            protocol.send_continuation(payload, fin=fin)
        elif kind == "binary":
            protocol.send_binary(payload)
        elif kind == "ping":
            protocol.send_ping(payload)
        elif kind == "raw":  # bytes written as they are, not framed by the protocol
            pass
    data = b"".join(protocol.data_to_send())
    data += b"".join(payload for kind, payload, _ in script if kind == "raw")

    async def read() -> None:
        while received := await stream.receive_some():
            protocol.receive_data(received)
            frames = protocol.events_received()
            pongs.extend(bytes(f.data) for f in frames if getattr(f, "opcode", None) is Opcode.PONG)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        for i in range(0, len(data), chunk):
            await stream.send_all(data[i : i + chunk])
            await trio.testing.wait_all_tasks_blocked()


async def run_client(
    script: list[tuple[str, bytes, bool]],
    chunk: int,
    *,
    compression: bool = False,
    limit: int = 1 << 20,
    expect: int,
) -> tuple[list[bytes], int, list[bytes], SourceUnavailable | None]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    extensions = [ServerPerMessageDeflateFactory()] if compression else None
    protocol = ServerProtocol(extensions=extensions)

    async def opener(host: str, port: int, secure: bool) -> trio.abc.Stream:
        return client_stream

    got: list[bytes] = []
    pongs: list[bytes] = []
    error: SourceUnavailable | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_script, server_stream, protocol, script, chunk, pongs)
        transport = SansIOTransport(opener=opener, compression=compression)
        with trio.fail_after(10):
            async with transport.connect(
                "ws://127.0.0.1:9/", max_message_bytes=limit, open_timeout=5
            ) as conn:
                try:
                    while len(got) < expect:
                        got.extend(await conn.receive_messages())
                except SourceUnavailable as exc:
                    error = exc
                binaries = conn.binary_messages
                if any(kind == "ping" for kind, _, _ in script):
                    while not pongs:  # a pong queued with the last messages still goes out
                        with trio.move_on_after(0.5):
                            got.extend(await conn.receive_messages())
        nursery.cancel_scope.cancel()
    return got, binaries, pongs, error


MIXED: list[tuple[str, bytes, bool]] = [
    ("text", b'{"n":1}', True),
    ("ping", b"p1", True),
    ("text", b'{"n":2,"pad":"' + b"a" * 300 + b'"}', True),  # 16-bit length
    ("text", b'{"part":', False),  # fragmented: the protocol reassembles it
    ("cont", b'"one",', False),
    ("cont", b'"two":2}', True),
    ("binary", b"\x00\x01", True),
    ("text", b'{"n":3,"pad":"' + b"b" * 70_000 + b'"}', True),  # 64-bit length
    ("text", '{"n":4,"s":"é€"}'.encode(), True),
]
EXPECTED = [
    b'{"n":1}',
    b'{"n":2,"pad":"' + b"a" * 300 + b'"}',
    b'{"part":"one","two":2}',
    b'{"n":3,"pad":"' + b"b" * 70_000 + b'"}',
    '{"n":4,"s":"é€"}'.encode(),
]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 9, 64, 1000, 1 << 20])
async def test_messages_do_not_depend_on_where_the_stream_is_cut(chunk: int) -> None:
    got, binaries, pongs, error = await run_client(MIXED, chunk, expect=len(EXPECTED))
    assert error is None
    assert got == EXPECTED
    assert binaries == 1
    assert pongs == [b"p1"]


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
async def test_compressed_messages_go_through_the_protocol(chunk: int) -> None:
    got, _, _, error = await run_client(MIXED, chunk, compression=True, expect=len(EXPECTED))
    assert error is None
    assert got == EXPECTED


@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
async def test_bad_utf8_is_passed_on_for_the_processor_to_reject(chunk: int) -> None:
    bad = b"\x81\x04ok\xff\xfe"  # a text frame whose payload is not UTF-8
    after = b"\x81\x07" + b'{"n":2}'
    script = [("text", b'{"n":1}', True), ("raw", bad + after, True)]
    got, _, _, error = await run_client(script, chunk, expect=3)
    assert error is None
    assert got == [b'{"n":1}', b"ok\xff\xfe", b'{"n":2}']  # and the connection goes on


@pytest.mark.parametrize("chunk", [1, 1 << 20])
async def test_a_frame_over_the_limit_fails_the_connection(chunk: int) -> None:
    script = [("text", b'{"n":1}', True), ("text", b"x" * 5000, True)]
    got, _, _, error = await run_client(script, chunk, limit=1000, expect=3)
    assert got == [b'{"n":1}']
    assert error is not None
    assert error.kind == "oversized"


async def test_a_masked_server_frame_is_a_protocol_error() -> None:
    masked = b"\x81\x82abcd" + bytes(c ^ k for c, k in zip(b"hi", b"ab", strict=True))
    got, _, _, error = await run_client([("raw", masked, True)], 1 << 20, expect=1)
    assert got == []
    assert error is not None
    assert error.kind == "protocol"
