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
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio.tcp_server import TCPServer

logger = logging.getLogger(__name__)

_ORIGINAL = TCPServer.protocol_send
_deadline = {"seconds": 15.0}
#: Connections closed because a write missed its deadline (``/metrics``).
stalled = {"count": 0}


async def _protocol_send(self: Any, event: Event) -> None:
    if not isinstance(event, RawData):
        return await _ORIGINAL(self, event)
    async with self.send_lock:
        with trio.CancelScope(shield=True):
            try:
                with trio.fail_after(_deadline["seconds"]):
                    await self.stream.send_all(event.data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())
            except trio.TooSlowError:
                stalled["count"] += 1
                logger.warning(
                    "a client took no data for %.0f s (SLUICE_SEND_TIMEOUT): disconnecting it",
                    _deadline["seconds"],
                )
                await self.stream.aclose()
                await self.protocol.handle(Closed())
    return None


def install(seconds: float) -> None:
    """Give every write of every hypercorn connection in this process ``seconds``."""
    _deadline["seconds"] = seconds
    TCPServer.protocol_send = _protocol_send  # type: ignore[method-assign]
