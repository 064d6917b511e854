"""WebSocket client transports behind one small interface.

``websockets`` (default): the ``websockets`` package's Sans-I/O protocol driven by a Trio
stream. It hands back every message one socket read produced, as raw UTF-8 bytes, so a
burst costs one await and JSON is parsed straight from bytes.

``trio-websocket``: the trio-websocket client, selectable with
``SLUICE_WS_TRANSPORT=trio-websocket``.

Error handling: every failure to connect, a handshake refusal, a protocol error or a
closed connection is raised as :class:`~engine.errors.SourceUnavailable` (the connector
reconnects). Nothing else escapes except bugs.

Resource handling: :meth:`Transport.connect` is an async context manager; leaving it sends
a close frame (time-limited and shielded) and closes the socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn, Protocol

import attrs
import trio
import trio_websocket
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidURI, PayloadTooBig, WebSocketException
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.uri import parse_uri

from .errors import SourceUnavailable

logger = logging.getLogger(__name__)

RECEIVE_BYTES = 256 * 1024
CLOSE_TIMEOUT = 2.0


class Connection(Protocol):
    """An open WebSocket connection as the connector sees it.

    ``pongs`` counts pong frames received; :meth:`ping` sends a ping and returns at once,
    so the caller can watch ``pongs`` while it keeps reading.
    """

    binary_messages: int
    oversized_messages: int
    pongs: int

    async def send_text(self, text: str) -> None: ...

    async def receive_messages(self) -> list[bytes]:
        """Wait for at least one complete text message; return every one available.
        Binary messages are counted in ``binary_messages`` and not returned."""
        ...

    async def ping(self) -> None: ...

    async def deliver(self, sink: Callable[[list[bytes]], None]) -> NoReturn:
        """Hand every text message to ``sink`` as it arrives, in order, until the
        connection fails (:class:`SourceUnavailable`) or the caller is cancelled. ``sink``
        must not block: it may be called from another task (see :class:`SocketReader`)."""
        ...


class Transport(Protocol):
    name: str

    def connect(
        self,
        url: str,
        *,
        max_message_bytes: int,
        open_timeout: float,
        headers: dict[str, str] | None = None,
    ) -> contextlib.AbstractAsyncContextManager[Connection]: ...


def transport_named(name: str) -> Transport:
    if name == "trio-websocket":
        return TrioWebsocketTransport()
    return SansIOTransport()


StreamOpener = Callable[[str, int, bool], Awaitable[trio.abc.Stream]]


async def open_stream(host: str, port: int, secure: bool) -> trio.abc.Stream:
    """TCP, or TLS over TCP with the system's certificate store."""
    if secure:
        return await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=ssl.create_default_context()
        )
    return await trio.open_tcp_stream(host, port)


@attrs.frozen
class SansIOTransport:
    """The ``websockets`` Sans-I/O protocol on a Trio TCP (or TLS) stream.

    ``opener`` makes the byte stream; tests pass one that returns in-memory streams.
    ``compression`` offers permessage-deflate (exchanges that accept it send less).
    """

    opener: StreamOpener = open_stream
    compression: bool = True
    name = "websockets"

    @contextlib.asynccontextmanager
    async def connect(
        self,
        url: str,
        *,
        max_message_bytes: int,
        open_timeout: float,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[Connection]:
        try:
            uri = parse_uri(url)
        except InvalidURI as exc:
            # The exception text holds the whole URL, query (secrets) included: leave it out.
            raise SourceUnavailable("invalid WebSocket URL", "connect_failed") from exc
        stream: trio.abc.Stream
        try:
            with trio.fail_after(open_timeout):
                stream = await self.opener(uri.host, uri.port, uri.secure)
                conn = _SansIOConnection(stream, uri, max_message_bytes, self.compression)
                try:
                    await conn.handshake(headers or {})
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
        except trio.TooSlowError as exc:
            raise SourceUnavailable(
                f"connecting took longer than {open_timeout:g} s", "connect_failed"
            ) from exc
        except (OSError, trio.BrokenResourceError) as exc:
            raise SourceUnavailable(
                f"cannot connect: {exc.__class__.__name__}", "connect_failed"
            ) from exc
        try:
            yield conn
        finally:
            await conn.aclose()


class SocketReader:
    """One task reading every plain-TCP source socket that has data (Linux ``epoll``).

    Each frame of a quiet feed used to wake its connector's own task: Trio re-arms the
    socket in its ``epoll`` set, reschedules the task, runs the instruments' hooks around
    its step, and the task then enters its read again. With 200 connectors at 50 messages a
    second each that was most of the engine's CPU (bench/README.md, "One reader for every
    quiet socket"). Here the sockets stay in an ``epoll`` set of their own (registered
    once, level-triggered), Trio waits on that set's descriptor, and one task step reads
    every socket that is ready and hands its messages on (``sink``, which never blocks).
    A connection leaves the set whenever its own task must act (see
    :meth:`_SansIOConnection._pushed`), so answers, closes and errors keep their one path.

    One per Trio run, started on first use as a system task (Trio's own I/O manager is
    one too); ``None`` where there is no ``epoll``: connections then read in their task.
    """

    MAX_EVENTS = 256  # sockets served per task step; the rest stay ready for the next

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._handlers: dict[int, Callable[[], None]] = {}
        self.reads = 0  # handler calls: sockets served

    @classmethod
    def current(cls) -> SocketReader | None:
        try:
            return _READER.get()
        except LookupError:
            pass
        reader = cls() if hasattr(select, "epoll") else None
        _READER.set(reader)
        if reader is not None:
            trio.lowlevel.spawn_system_task(reader._run, name="sluice: source socket reader")
        return reader

    def register(self, fd: int, handler: Callable[[], None]) -> None:
        self._handlers[fd] = handler
        self._epoll.register(fd, select.EPOLLIN)

    def unregister(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):  # already closed: already gone
                self._epoll.unregister(fd)

    async def _run(self) -> None:
        epoll = self._epoll
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                for fd, _events in epoll.poll(0, self.MAX_EVENTS):
                    handler = self._handlers.get(fd)
                    if handler is None:
                        continue  # left the set earlier in this step
                    self.reads += 1
                    try:
                        handler()
                    except Exception:  # a bug: never let it end the run; the socket leaves
                        logger.exception("source socket reader: handler failed")
                        self.unregister(fd)
        finally:
            epoll.close()


_READER: trio.lowlevel.RunVar[SocketReader | None] = trio.lowlevel.RunVar("sluice_socket_reader")


class _SansIOConnection:
    def __init__(
        self, stream: trio.abc.Stream, uri: object, max_message_bytes: int, compression: bool
    ) -> None:
        self._stream = stream
        self._protocol = ClientProtocol(
            uri,  # type: ignore[arg-type]
            max_size=max_message_bytes,
            extensions=[ClientPerMessageDeflateFactory()] if compression else None,
        )
        self._send_lock = trio.Lock()
        self._events: list[Request | Response | Frame] = []
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self._max_message_bytes = max_message_bytes
        self._partial = b""  # bytes after the last whole frame (fast path)
        self._fast = True  # False once the protocol has been handed a partial frame
        self._ready: list[bytes] = []  # messages taken, in order, not yet returned
        self.binary_messages = 0
        self.oversized_messages = 0
        self.pongs = 0
        self._fd: int | None = None  # plain TCP, after the handshake: see _receive
        self._act = False  # a frame went to the protocol: this task may have to answer it
        self._failure: Exception | None = None  # raised in the shared reader's task

    async def handshake(self, headers: dict[str, str]) -> None:
        request = self._protocol.connect()
        for name, value in headers.items():
            request.headers[name] = value
        self._protocol.send_request(request)
        await self._flush()
        head = b""
        while True:
            # Only the response head goes to the protocol, so that it stands at a frame
            # boundary afterwards and whole frames can bypass it (see _take_frames).
            data = await self._receive()
            if not data:
                self._give_up(b"")
                self._protocol.receive_eof()
            elif not self._fast or head.endswith(b"\r\n\r\n"):
                self._protocol.receive_data(data)
            else:
                head += data
                end = head.find(b"\r\n\r\n")
                if end < 0:
                    self._protocol.receive_data(data)
                else:
                    cut = len(data) - (len(head) - (end + 4))
                    self._protocol.receive_data(data[:cut])
                    self._partial = data[cut:]
                    head = head[: end + 4]
            events = self._protocol.events_received()
            for i, event in enumerate(events):
                if isinstance(event, Response):
                    if self._protocol.handshake_exc is not None:
                        raise SourceUnavailable(
                            f"handshake refused: {self._protocol.handshake_exc}", "connect_failed"
                        ) from self._protocol.handshake_exc
                    self._events = events[i + 1 :]
                    if type(self._stream) is trio.SocketStream:
                        # Read directly from the stream's own descriptor (see _receive).
                        self._fd = self._stream.socket.fileno()
                    self._ready = self._take_messages()
                    if self._fast and self._partial:
                        self._take_frames(self._partial)
                    return
            if self._protocol.state is State.CLOSED:
                raise SourceUnavailable("connection closed during the handshake", "connect_failed")
            if self._partial:  # a head with no response yet: a refusal with a body
                self._give_up(self._partial)

    async def send_text(self, text: str) -> None:
        self._protocol.send_text(text.encode())
        await self._flush()

    async def ping(self) -> None:
        self._protocol.send_ping(os.urandom(4))
        await self._flush()

    async def receive_messages(self) -> list[bytes]:
        while True:
            await self._answer()
            messages = self._ready
            if messages:
                self._ready = []
                return messages
            self._raise_if_ended()
            await self._read()

    async def deliver(self, sink: Callable[[list[bytes]], None]) -> NoReturn:
        while True:
            await self._answer()
            self._act = False
            if self._ready:
                messages, self._ready = self._ready, []
                sink(messages)
            self._raise_if_ended()
            reader = SocketReader.current() if self._fd is not None and self._fast else None
            if reader is None:
                await self._read()
            else:
                await self._pushed(reader, sink)

    async def _pushed(self, reader: SocketReader, sink: Callable[[list[bytes]], None]) -> None:
        """Let the shared reader read this socket and hand its messages to ``sink`` until
        something needs this task: a frame for the protocol (a ping to answer, a close),
        the end of the stream, or an error."""
        fd = self._fd
        assert fd is not None
        attention = trio.Event()

        def readable() -> None:
            try:
                data = os.read(fd, RECEIVE_BYTES)
                self._consume(data)
                if self._ready:
                    messages, self._ready = self._ready, []
                    sink(messages)
                if data and self._fast and not self._act:
                    return  # the common case: stay in the set
            except BlockingIOError:
                return
            except Exception as exc:  # raised again in this connection's task
                self._failure = exc
            reader.unregister(fd)
            attention.set()

        reader.register(fd, readable)
        try:
            await attention.wait()
        finally:
            reader.unregister(fd)
        failure, self._failure = self._failure, None
        if isinstance(failure, OSError):
            raise SourceUnavailable(f"connection lost: {failure.__class__.__name__}") from failure
        if failure is not None:
            raise failure

    def _raise_if_ended(self) -> None:
        protocol = self._protocol
        if protocol.close_rcvd is not None:
            close = protocol.close_rcvd
            raise SourceUnavailable(f"closed by the source: {close.code} {close.reason}")
        if protocol.state is State.CLOSED or protocol.parser_exc is not None:
            cause = protocol.parser_exc
            if isinstance(cause, PayloadTooBig):
                self.oversized_messages += 1
                raise SourceUnavailable(f"message too big: {cause}", "oversized") from cause
            kind = "protocol" if cause is not None else "closed"
            raise SourceUnavailable(f"connection failed: {cause or 'closed'}", kind) from cause

    async def _answer(self) -> None:
        """Send the pongs and close replies the protocol queued. Shielded: a send cut in
        half by the caller's timeout would corrupt the stream."""
        chunks = self._protocol.data_to_send()
        if not chunks:
            return
        with trio.move_on_after(CLOSE_TIMEOUT, shield=True) as scope:
            await self._send(chunks)
        if scope.cancelled_caught:
            raise SourceUnavailable("the source stopped reading our frames", "protocol")

    def _take_messages(self) -> list[bytes]:
        self._events.extend(self._protocol.events_received())
        out: list[bytes] = []
        for event in self._events:
            if not isinstance(event, Frame):
                continue
            opcode = event.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if event.fin:
                    self._emit(out, opcode, bytes(event.data))
                else:
                    self._fragment_opcode = opcode
                    self._fragments = [bytes(event.data)]
            elif opcode is Opcode.PONG:
                self.pongs += 1
            elif opcode is Opcode.CONT and self._fragment_opcode is not None:
                self._fragments.append(bytes(event.data))
                if event.fin:
                    self._emit(out, self._fragment_opcode, b"".join(self._fragments))
                    self._fragments, self._fragment_opcode = [], None
        self._events = []
        return out

    def _emit(self, out: list[bytes], opcode: Opcode, data: bytes) -> None:
        if opcode is Opcode.TEXT:
            out.append(data)
        else:
            self.binary_messages += 1

    async def _receive(self) -> bytes:
        """The next bytes from the source (``b""``: it closed the connection).

        Plain TCP skips Trio's ``SocketStream.receive_some``: a try that fails with
        ``EAGAIN`` (most receives of a quiet feed), a conflict detector, two context
        managers and a second scheduling point around every receive were ≈ 11% of the
        engine's CPU with 200 connectors at 50 messages a second each. Waiting for the
        socket first and then reading it is one wake-up and one system call."""
        fd = self._fd
        try:
            if fd is not None:
                while True:
                    await trio.lowlevel.wait_readable(fd)
                    try:
                        return os.read(fd, RECEIVE_BYTES)
                    except BlockingIOError:
                        continue  # woken without data after all
            return bytes(await self._stream.receive_some(RECEIVE_BYTES))
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise SourceUnavailable(f"connection lost: {exc.__class__.__name__}") from exc

    async def _read(self) -> None:
        self._consume(await self._receive())

    def _consume(self, data: bytes) -> None:
        """Take what one read of the socket gave (``b""``: the end of the stream)."""
        if self._fast and data:
            self._take_frames(self._partial + data if self._partial else data)
            return
        if self._fast:  # end of stream: let the protocol judge what is left
            self._give_up(self._partial)
        elif data:
            self._protocol.receive_data(data)
        else:
            self._protocol.receive_eof()
        self._ready.extend(self._take_messages())

    def _take_frames(self, data: bytes) -> None:
        """Take every complete frame in ``data``, in order; keep the rest for later.

        A final, unmasked, uncompressed text frame of acceptable size, outside a fragmented
        message, is the common case: its payload is taken directly, several times cheaper
        than the general parser. Like the protocol, this does not check UTF-8: the processor
        rejects such a message as ``invalid_utf8``. Any other complete frame (control
        frames, fragments, compressed or binary messages) is handed whole to the
        ``websockets`` protocol, which therefore always stands at a frame boundary. A frame
        larger than allowed goes to the protocol too, which fails the connection as it
        should; from then on every byte goes to the protocol.
        """
        protocol = self._protocol
        ready = self._ready
        limit = self._max_message_bytes
        size = len(data)
        pos = 0
        while size - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            if b1 & 0x80:
                start += 4  # masked: a server must not; the protocol will say so
            if length > limit:
                self._give_up(data[pos:])
                return
            end = start + length
            if end > size:
                break
            if b0 == 0x81 and not b1 & 0x80 and self._fragment_opcode is None:
                ready.append(data[start:end])
            else:
                self._act = True  # it may have queued an answer (a pong, a close reply)
                protocol.receive_data(data[pos:end])
                ready.extend(self._take_messages())
                if protocol.state is not State.OPEN or protocol.parser_exc is not None:
                    self._give_up(data[end:])
                    return
            pos = end
        self._partial = data[pos:]

    def _give_up(self, rest: bytes) -> None:
        """Hand ``rest`` to the protocol, and every byte after it from now on."""
        self._fast = False
        self._partial = b""
        if rest:
            self._protocol.receive_data(rest)
        self._ready.extend(self._take_messages())

    async def _flush(self) -> None:
        await self._send(self._protocol.data_to_send())

    async def _send(self, chunks: list[bytes]) -> None:
        if not chunks:
            return
        async with self._send_lock:
            for chunk in chunks:
                if not chunk:
                    continue  # EOF marker: the socket is closed in aclose()
                try:
                    await self._stream.send_all(chunk)
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise SourceUnavailable(f"connection lost: {exc.__class__.__name__}") from exc

    async def aclose(self) -> None:
        self._fd = None  # the stream's close below wakes a read waiting on it
        with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
            if self._protocol.state is State.OPEN:
                self._protocol.send_close(1000)
                with contextlib.suppress(SourceUnavailable):
                    await self._flush()
            await self._stream.aclose()
        await trio.aclose_forcefully(self._stream)


class TrioWebsocketTransport:
    """trio-websocket's client. Text arrives as ``str`` and is re-encoded to bytes."""

    name = "trio-websocket"

    @contextlib.asynccontextmanager
    async def connect(
        self,
        url: str,
        *,
        max_message_bytes: int,
        open_timeout: float,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[Connection]:
        try:
            async with trio_websocket.open_websocket_url(
                url,
                extra_headers=[(k.encode(), v.encode()) for k, v in (headers or {}).items()],
                max_message_size=max_message_bytes,
                connect_timeout=open_timeout,
                disconnect_timeout=CLOSE_TIMEOUT,
            ) as ws:
                try:
                    async with trio.open_nursery() as pingers:
                        try:
                            yield _TrioWebsocketConnection(ws, pingers)
                        finally:
                            pingers.cancel_scope.cancel()
                except BaseExceptionGroup as group:
                    # The ping tasks never raise (they log and swallow), so a group here
                    # holds only what the caller's block raised: give that back unwrapped.
                    body = group.exceptions[0] if len(group.exceptions) == 1 else None
                    if isinstance(body, Exception):
                        raise body from None
                    raise
                finally:
                    # trio-websocket 0.12 leaves the client socket open when the server
                    # closes first; close it ourselves so reconnect loops leak no fds.
                    await trio.aclose_forcefully(ws._stream)
        except (
            OSError,
            trio.BrokenResourceError,
            trio_websocket.HandshakeError,
            trio_websocket.ConnectionClosed,
            trio_websocket.ConnectionTimeout,
            trio_websocket.DisconnectionTimeout,
            WebSocketException,
            ValueError,
        ) as exc:
            raise SourceUnavailable(
                f"WebSocket failed: {exc.__class__.__name__}", "connect_failed"
            ) from exc


class _TrioWebsocketConnection:
    def __init__(self, ws: trio_websocket.WebSocketConnection, pingers: trio.Nursery) -> None:
        self._ws = ws
        self._pingers = pingers
        self.binary_messages = 0
        self.oversized_messages = 0
        self.pongs = 0

    async def send_text(self, text: str) -> None:
        try:
            await self._ws.send_message(text)
        except trio_websocket.ConnectionClosed as exc:
            raise SourceUnavailable(f"closed by the source: {exc.reason}") from exc

    async def ping(self) -> None:
        # trio-websocket's ping() waits for its pong; wait in a side task so the caller
        # keeps reading (a full message queue would otherwise stall the pong itself).
        self._pingers.start_soon(self._ping_and_count)

    async def _ping_and_count(self) -> None:
        try:
            await self._ws.ping()
        except trio_websocket.ConnectionClosed:
            return
        except Exception:
            logger.exception("trio-websocket ping failed")
            return
        self.pongs += 1

    async def receive_messages(self) -> list[bytes]:
        while True:
            try:
                message = await self._ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                if exc.reason is not None and exc.reason.code == 1009:  # message too big
                    self.oversized_messages += 1
                    raise SourceUnavailable("message too big", "oversized") from exc
                raise SourceUnavailable(f"closed by the source: {exc.reason}") from exc
            if isinstance(message, str):
                return [message.encode("utf-8", "surrogatepass")]
            self.binary_messages += 1

    async def deliver(self, sink: Callable[[list[bytes]], None]) -> NoReturn:
        while True:
            sink(await self.receive_messages())
