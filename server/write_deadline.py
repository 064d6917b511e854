"""A deadline on every socket write hypercorn makes.

hypercorn (0.17, ``trio/tcp_server.py``) writes each response and each WebSocket frame
with ``send_all`` inside a *shielded* cancel scope, so nothing interrupts a write to a
peer that has stopped reading. The task waits for ever, its connection and what it holds
stay, and since a shielded task ignores the graceful shutdown's cancellation,
``sluice serve`` never exits on SIGTERM. Found 2026-12-06: a realtime subscriber that
never read was lagged out, and the server, writing it the ``lagged`` notice, was still
waiting 60 s after SIGTERM (``tests/test_lifecycle.py`` holds it).

:func:`install` gives that write a deadline (``SLUICE_SEND_TIMEOUT``, 15 s by default): a
peer that takes no byte of a write for that long is disconnected — its socket closed, the
app told it is gone — as a TCP peer that vanished would be. The shield stays, so a
cancellation still never cuts a frame in half for a peer that reads.

While it owns that write, it also makes the common case cheap: when nobody else is
writing to the connection, the bytes go straight to the socket (``os.write`` on its
non-blocking descriptor), and only what the socket did not take goes through Trio's
``send_all`` under the shield and the deadline. Measured with 1,000 realtime subscribers
(bench/README.md): p99 1.7 to 4.0 s became 1.0 to 1.6 s, the subscriber processes then being the
busy side of the machine.
"""

from __future__ import annotations

import logging
import os
from contextvars import ContextVar
from typing import Any

import trio
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio.tcp_server import TCPServer

logger = logging.getLogger(__name__)

_ORIGINAL = TCPServer.protocol_send
_ORIGINAL_RUN = TCPServer.run
#: The hypercorn connection a task serves (set in its ``run``; the app's tasks inherit it).
CONNECTION: ContextVar[TCPServer | None] = ContextVar("hypercorn_connection", default=None)
_deadline = {"seconds": 15.0}
#: Connections closed because a write missed its deadline (``/metrics``).
stalled = {"count": 0}


async def _run(self: Any) -> None:
    CONNECTION.set(self)
    await _ORIGINAL_RUN(self)


async def _protocol_send(self: Any, event: Event) -> None:
    # What a direct write left goes first. Once this returns no new rest can appear
    # before this write is done: write_now refuses while the lock is held.
    if self._sluice_rest is not None:
        await flush_rest(self)
    if not isinstance(event, RawData):
        return await _ORIGINAL(self, event)
    data = event.data
    lock = self.send_lock
    stream = self.stream
    if lock.locked() or type(stream) is not trio.SocketStream:
        async with lock:
            await _send(self, data)
        return None
    # Nobody is writing to this connection: try the write at once, straight to the socket.
    # Almost every realtime frame fits in the socket's buffer, and Trio's ``send_all``
    # (a conflict detector, a cancel scope, two context managers around a non-blocking
    # send) plus the lock's checkpoint were a third of the engine's CPU with 1,000
    # realtime subscribers. Only what the socket did not take goes the guarded way.
    lock.acquire_nowait()
    try:
        try:
            sent = os.write(stream.socket.fileno(), data)
        except BlockingIOError:
            sent = 0
        except OSError:  # reset, broken pipe, closed
            with trio.CancelScope(shield=True):
                await self.protocol.handle(Closed())
            return None
        if sent < len(data):
            await _send(self, memoryview(data)[sent:])
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()  # as send_all: a fair turn
    finally:
        lock.release()
    return None


async def _send(self: Any, data: bytes | memoryview) -> None:
    """hypercorn's write (shielded, so a frame is never cut for a peer that reads), with a
    deadline for one that does not."""
    # One scope, shielded and with its own deadline (which a shield does not stop), as
    # hypercorn's own write has one scope: a second, inner ``fail_after`` per write was
    # ≈ 15% of the engine's CPU with 1,000 realtime subscribers.
    deadline = trio.current_time() + _deadline["seconds"]
    with trio.CancelScope(shield=True, deadline=deadline) as scope:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.protocol.handle(Closed())
    if scope.cancelled_caught:
        stalled["count"] += 1
        logger.warning(
            "a client took no data for %.0f s (SLUICE_SEND_TIMEOUT): disconnecting it",
            _deadline["seconds"],
        )
        with trio.CancelScope(shield=True):
            await self.stream.aclose()
            await self.protocol.handle(Closed())


def write_now(connection: Any, data: bytes) -> bool:
    """Write ``data`` (whole WebSocket frames) to ``connection``'s socket at once, from
    synchronous code (the broadcast hub's fan-out), if nothing else is being written to it;
    False if it was not written (the caller sends it the usual way). What the socket does
    not take is kept and goes out before anything else written to the connection: the
    caller must then see that :func:`flush_rest` runs (``rest_pending``)."""
    stream = connection.stream
    if (
        connection.send_lock.locked()
        or connection._sluice_rest is not None
        or type(stream) is not trio.SocketStream
    ):
        return False
    try:
        sent = os.write(stream.socket.fileno(), data)
    except BlockingIOError:
        sent = 0
    except OSError:  # reset, closed: the usual way finds out and says so
        return False
    if sent < len(data):
        connection._sluice_rest = memoryview(data)[sent:]
    return True


def rest_pending(connection: Any) -> bool:
    return connection._sluice_rest is not None


async def flush_rest(connection: Any) -> None:
    """Write what :func:`write_now` left, under the connection's write lock and deadline."""
    async with connection.send_lock:
        rest, connection._sluice_rest = connection._sluice_rest, None
        if rest is not None:
            await _send(connection, rest)


def install(seconds: float) -> None:
    """Give every write of every hypercorn connection in this process ``seconds``; let its
    tasks find their connection (:data:`CONNECTION`) for :func:`write_now`."""
    _deadline["seconds"] = seconds
    TCPServer._sluice_rest = None  # type: ignore[attr-defined]
    TCPServer.protocol_send = _protocol_send  # type: ignore[method-assign]
    TCPServer.run = _run  # type: ignore[method-assign]
