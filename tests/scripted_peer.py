"""A scripted WebSocket server peer on an in-memory stream, built on the ``websockets``
Sans-I/O server protocol, for keepalive tests in virtual time.

The peer completes the handshake, then does what the test tells it: send text, answer
pings (the protocol queues pongs by itself) or go silent (read nothing, like a half-open
TCP connection).
"""

from __future__ import annotations

import attrs
import trio
import trio.testing
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol


@attrs.define(eq=False)
class ScriptedPeer:
    stream: trio.abc.Stream
    protocol: ServerProtocol = attrs.field(factory=ServerProtocol)
    texts: list[str] = attrs.field(factory=list)
    pings: list[float] = attrs.field(factory=list)
    silent: bool = False
    closed: trio.Event = attrs.field(factory=trio.Event)

    async def handshake(self) -> None:
        while True:
            self.protocol.receive_data(await self.stream.receive_some())
            for event in self.protocol.events_received():
                if isinstance(event, Request):
                    self.protocol.send_response(self.protocol.accept(event))
                    await self._flush()
                    return

    async def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        await self._flush()

    async def serve(self) -> None:
        """Read frames (answering pings) until the client goes away or we go silent."""
        try:
            while not self.silent:
                data = await self.stream.receive_some()
                if not data:
                    break
                self.protocol.receive_data(data)
                for event in self.protocol.events_received():
                    if isinstance(event, Frame) and event.opcode is Opcode.PING:
                        self.pings.append(trio.current_time())
                    elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                        self.texts.append(bytes(event.data).decode())
                if self.silent:
                    break
                await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.closed.set()

    async def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                await self.stream.send_all(chunk)


@attrs.define(eq=False)
class PeerFactory:
    """A stream opener for :class:`~engine.transport.SansIOTransport` that hands each
    connection to a new :class:`ScriptedPeer`, run by ``script`` in ``nursery``."""

    nursery: trio.Nursery
    script: object
    peers: list[ScriptedPeer] = attrs.field(factory=list)
    connect_times: list[float] = attrs.field(factory=list)

    async def __call__(self, host: str, port: int, secure: bool) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        peer = ScriptedPeer(server)
        self.peers.append(peer)
        self.connect_times.append(trio.current_time())
        self.nursery.start_soon(self.script, peer)  # type: ignore[arg-type]
        return client
