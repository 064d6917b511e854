"""Outgoing WebSocket frames with one copy of the payload instead of five, and none for a
text every subscriber sends.

hypercorn serializes every frame a Quart ``websocket.send`` makes through wsproto, whose
``FrameProtocol._serialize_frame`` (wsproto 1.x) copies the payload into a bytearray,
concatenates the header onto it, copies the result into another bytearray, and
``Connection.send`` copies that once more into bytes. For one subscriber that is noise; for
a thousand subscribers of a busy feed it was most of the engine's time and much of its
memory (measured in ``bench/``, scenario ``subscribers-1000``).

:func:`install` replaces that method with an equivalent that writes the header and the
payload into one ``bytes`` object (which ``Connection.send`` then passes on without
copying), and ``FrameProtocol.send_data`` with one that remembers the last few text frames
it built: the broadcast hub hands every subscriber the *same* ``str`` object, so the second
to the thousandth subscriber write the first one's bytes (an identity check on the kept
``str``, so never a wrong frame). Both only take the frames they are exact for — server
side, no extension negotiated, a whole message; client frames (masked), fragments and
permessage-deflate frames go to wsproto's own code. The bytes on the wire are identical:
``tests/test_wsframes.py`` compares both for every length class and opcode.

Several frames in one write: a :class:`FrameBundle` sent as one text message (through
Quart, hypercorn and wsproto, which pass the ``str`` on untouched) comes out as the bytes
of one WebSocket frame per text it carries, concatenated, so the route hands hypercorn
one write for all the one-record frames a subscriber has waiting instead of one each
(with compression negotiated, each text is still its own compressed message).

It also decides one thing of the handshake hypercorn makes: a client that asks for the
``sluice`` subprotocol (the console does) gets no permessage-deflate even if it offers it.
Browsers always offer it and cannot be told not to, and compressing every subscriber's
stream separately cost the engine so much CPU that a console tab at 30,000 msg/s fell
20,000 records behind and was cut off (``tests/test_console.py``); uncompressed, the
frames it shares with other subscribers are also built once for all of them.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from hypercorn.protocol.ws_stream import Handshake
from wsproto.frame_protocol import FrameProtocol, Opcode

_ORIGINAL = FrameProtocol._serialize_frame
_ORIGINAL_SEND_DATA = FrameProtocol.send_data
_ORIGINAL_ACCEPT = Handshake.accept
#: The subprotocol that asks for uncompressed frames (and carries the console's token).
SUBPROTOCOL = "sluice"
RECENT_FRAMES = 16
# id(text) -> (text, frame): the text is kept, so its id cannot be reused while listed.
_recent: OrderedDict[int, tuple[str, bytes]] = OrderedDict()
_SHORT = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


class FrameBundle(str):
    """Several text frames, sent as one ``websocket.send``: the value is empty, the texts
    are in ``frames``."""

    __slots__ = ("frames",)

    frames: list[str]

    def __new__(cls, frames: list[str]) -> FrameBundle:
        bundle = super().__new__(cls, "")
        bundle.frames = frames
        return bundle


def _serialize_frame(
    self: FrameProtocol, opcode: Opcode, payload: bytes | bytearray = b"", fin: bool = True
) -> bytes | bytearray:
    if self.client or self.extensions:
        return _ORIGINAL(self, opcode, payload, fin)
    if opcode.iscontrol() and len(payload) > 125:
        raise ValueError("payload too long for control frame")
    return _frame((0x80 if fin else 0) | opcode, payload)


def _frame(first: int, payload: bytes | bytearray) -> bytes:
    """An unmasked frame: its first byte, the payload's length, the payload, one copy."""
    n = len(payload)
    if n <= 125:
        return bytes((first, n)) + payload
    if n <= 0xFFFF:
        return _SHORT.pack(first, 126, n) + payload
    return _LONG.pack(first, 127, n) + payload


def _send_data(
    self: FrameProtocol, payload: bytes | bytearray | str = b"", fin: bool = True
) -> bytes | bytearray:
    if type(payload) is FrameBundle:
        return b"".join([_send_data(self, text, fin) for text in payload.frames])
    if (
        type(payload) is not str
        or not fin
        or self.client
        or self.extensions
        or self._outbound_opcode is not None
    ):
        return _ORIGINAL_SEND_DATA(self, payload, fin)
    return text_frame(payload)


def text_frame(text: str) -> bytes:
    """A server's uncompressed text frame of ``text`` (one whole message); the last few
    built are kept, so the subscribers sharing a ``str`` share its frame's bytes."""
    known = _recent.get(id(text))
    if known is not None and known[0] is text:
        return known[1]
    frame = _frame(0x80 | Opcode.TEXT, text.encode("utf-8"))
    _recent[id(text)] = (text, frame)
    if len(_recent) > RECENT_FRAMES:
        _recent.popitem(last=False)
    return frame


def _accept(
    self: Handshake, subprotocol: str | None, additional_headers: Iterable[tuple[bytes, bytes]]
) -> Any:
    if subprotocol != SUBPROTOCOL:
        return _ORIGINAL_ACCEPT(self, subprotocol, additional_headers)
    offered, self.extensions = self.extensions, None  # decline permessage-deflate
    try:
        return _ORIGINAL_ACCEPT(self, subprotocol, additional_headers)
    finally:
        self.extensions = offered


def install() -> None:
    """Use the one-copy serializer for every wsproto connection in this process, and no
    compression for clients of the ``sluice`` subprotocol."""
    # wsproto declares bytearray; its one caller, Connection.send, takes any bytes.
    FrameProtocol._serialize_frame = _serialize_frame  # type: ignore[method-assign,assignment]
    FrameProtocol.send_data = _send_data  # type: ignore[method-assign,assignment]
    Handshake.accept = _accept  # type: ignore[method-assign]


def original(
    protocol: FrameProtocol, opcode: Opcode, payload: bytes | bytearray = b"", fin: bool = True
) -> bytearray:
    """wsproto's own serializer (for tests and comparison)."""
    return _ORIGINAL(protocol, opcode, payload, fin)
