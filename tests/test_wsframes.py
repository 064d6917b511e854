"""The one-copy WebSocket frame serializer writes exactly what wsproto's own does."""

from __future__ import annotations

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Message, Request
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol, Opcode

from server import wsframes

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 200_000]


@pytest.fixture(autouse=True)
def _installed() -> None:
    wsframes.install()


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION])
@pytest.mark.parametrize("fin", [True, False])
def test_data_frames_are_byte_identical(length: int, opcode: Opcode, fin: bool) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    server = FrameProtocol(client=False, extensions=[])
    new = server._serialize_frame(opcode, payload, fin)
    assert isinstance(new, bytes)  # so Connection.send passes it on without a copy
    assert new == bytes(wsframes.original(server, opcode, payload, fin))
    assert new == bytes(wsframes.original(server, opcode, bytearray(payload), fin))


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_control_frames(opcode: Opcode) -> None:
    server = FrameProtocol(client=False, extensions=[])
    for length in (0, 2, 125):
        payload = b"x" * length
        assert server._serialize_frame(opcode, payload) == bytes(
            wsframes.original(server, opcode, payload)
        )
    with pytest.raises(ValueError, match="control frame"):
        server._serialize_frame(opcode, b"x" * 126)
    with pytest.raises(ValueError, match="control frame"):
        wsframes.original(server, opcode, b"x" * 126)


def test_clients_and_extensions_keep_wsprotos_own_path() -> None:
    client = FrameProtocol(client=True, extensions=[])
    frame = client._serialize_frame(Opcode.TEXT, b"hello")
    assert len(frame) == 2 + 4 + 5  # a mask key ...
    assert frame[1] & 0x80  # ... and the mask bit, as a client must
    deflate = PerMessageDeflate()
    deflate._enabled = True
    compressed = FrameProtocol(client=False, extensions=[deflate])
    assert compressed._serialize_frame(Opcode.TEXT, b"hello" * 100)[0] & 0x40  # RSV1 set


def test_a_whole_connection_round_trip() -> None:
    """A server connection's messages still parse on a client, text and binary, large and
    small, through wsproto end to end."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="localhost", target="/")))
    request = next(server.events())
    assert isinstance(request, Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    sent: list[str | bytes] = ["é" * 10, "x" * 70_000, b"\x00\x01" * 100, ""]
    for data in sent:
        client.receive_data(server.send(Message(data=data)))
    got = [event.data for event in client.events() if isinstance(event, Message)]
    assert got == sent


def test_a_shared_text_is_framed_once_and_never_confused() -> None:
    server = FrameProtocol(client=False, extensions=[])
    shared = "".join(["{", '"n":1', "}"])  # built at run time, as the hub builds its texts
    first = server.send_data(shared)
    assert server.send_data(shared) is first  # the second subscriber reuses the bytes
    equal_but_other = "".join(["{", '"n":1', "}"])
    assert equal_but_other is not shared
    assert server.send_data(equal_but_other) == first
    for i in range(3 * wsframes.RECENT_FRAMES):  # the cache stays bounded
        text = f"frame {i} " + "x" * i
        assert server.send_data(text) == bytes(
            wsframes.original(server, Opcode.TEXT, text.encode())
        )
    assert len(wsframes._recent) <= wsframes.RECENT_FRAMES
    # Fragmented messages and binary data keep wsproto's own path and state.
    assert server.send_data("part", fin=False)[0] == 0x01
    assert server.send_data("end", fin=True)[0] == 0x80  # continuation, FIN
    assert server.send_data(b"\x00")[0] == 0x82


@pytest.mark.parametrize(
    ("protocols", "compressed"), [(None, True), ("sluice", False), ("other, sluice", False)]
)
def test_the_sluice_subprotocol_declines_compression(
    protocols: str | None, compressed: bool
) -> None:
    """Browsers always offer permessage-deflate; a client of the ``sluice`` subprotocol
    (the console) is answered without it, everyone else as hypercorn would."""
    from hypercorn.protocol.ws_stream import Handshake

    headers = [
        (b"connection", b"Upgrade"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"sec-websocket-version", b"13"),
        (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"),
    ]
    if protocols:
        headers.append((b"sec-websocket-protocol", protocols.encode()))
    handshake = Handshake(headers, "1.1")
    chosen = "sluice" if protocols else None
    _, answer, connection = handshake.accept(chosen, [])
    names = {name for name, _ in answer}
    assert (b"sec-websocket-extensions" in names) is compressed
    assert bool(connection._proto.extensions) is compressed
    # The offer itself is left as it was (hypercorn may read it again).
    assert handshake.extensions == ["permessage-deflate; client_max_window_bits"]


@pytest.mark.parametrize("deflate", [False, True])
def test_a_bundle_is_its_frames_back_to_back(deflate: bool) -> None:
    """A FrameBundle's bytes are exactly those of its texts sent one by one (compressed as
    separate messages when deflate was negotiated), so the client sees every frame."""
    texts = ["a" * n for n in (0, 1, 125, 126, 70_000)] + ['{"type":"data_update"}']

    def server() -> WSConnection:
        ext = [PerMessageDeflate()] if deflate else []
        client = WSConnection(ConnectionType.CLIENT)
        offer = client.send(Request(host="x", target="/", extensions=ext and [PerMessageDeflate()]))
        conn = WSConnection(ConnectionType.SERVER)
        conn.receive_data(offer)
        request = next(conn.events())
        assert isinstance(request, Request)
        conn.send(AcceptConnection(extensions=ext))
        return conn

    one_by_one, bundled = server(), server()
    expected = b"".join(one_by_one.send(Message(data=text)) for text in texts)
    assert bundled.send(Message(data=wsframes.FrameBundle(texts))) == expected
