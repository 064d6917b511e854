"""The WebSocket source actor: connect, subscribe, drain the socket, reconnect.

Two tasks share the connector's buffer: the *reader* moves every message off the socket
into a byte-bounded buffer as fast as it arrives (so the connection keeps answering pings
even while downstream is slow), and the *forwarder* hands the whole buffer to the
processor as one :class:`~engine.models.SourceBatch` per send. When the buffer is full the
reader drops messages and counts them as a **gap** (count, first and last time) instead of
growing memory.

Resource handling: the caller owns the send channel (a clone of the raw channel's send
end) and closes it after the last :meth:`run`, so a supervisor can call :meth:`run` again
after a crash. :meth:`request_stop` stops reading; whatever is buffered is then forwarded
(time-limited) before :meth:`run` returns.

Error handling: connection failures (:class:`~engine.errors.SourceUnavailable`) are
counted and retried forever with exponential backoff and full jitter; anything else is a
bug and propagates to the supervisor.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import attrs
import orjson
import trio

from .backoff import Backoff
from .errors import SourceUnavailable
from .models import ConnectorSpec, SourceBatch
from .transport import Connection, Transport

logger = logging.getLogger(__name__)

FLUSH_ON_STOP_SECONDS = 5.0


@attrs.frozen
class Gap:
    """Messages dropped because the connector's buffer was full."""

    count: int
    first_at: datetime
    last_at: datetime


@attrs.frozen
class WebSocketStatistics:
    status: str
    messages_received: int
    bytes_received: int
    binary_messages: int
    reconnects: int
    errors: int
    last_message_at: datetime | None
    last_error: str | None
    started_at: datetime | None
    buffered_messages: int
    buffered_bytes: int
    buffer_limit_bytes: int
    gap: Gap | None


@attrs.define(eq=False)
class WebSocketConnector:
    spec: ConnectorSpec
    send_channel: trio.MemorySendChannel[SourceBatch]
    transport: Transport
    max_message_bytes: int = 4 * 1024 * 1024
    buffer_limit_bytes: int = 64 * 1024 * 1024
    open_timeout: float = 10.0
    backoff: Backoff = attrs.field(factory=lambda: Backoff(base=0.5, cap=30.0, reset_after=30.0))

    status: str = "inactive"
    messages_received: int = 0
    bytes_received: int = 0
    reconnects: int = 0
    errors: int = 0
    last_message_at: float | None = None
    last_error: str | None = None
    started_at: datetime | None = None
    _frames: list[bytes | str] = attrs.field(factory=list)
    _times: list[float] = attrs.field(factory=list)
    _buffered_bytes: int = 0
    _binary_base: int = 0
    _connection: Connection | None = None
    _gap_count: int = 0
    _gap_first: float = 0.0
    _gap_last: float = 0.0
    _wakeup: trio.Event = attrs.field(factory=trio.Event)
    _read_scope: trio.CancelScope | None = None
    _stop_requested: bool = False
    _reading_done: bool = False

    @property
    def connector_id(self) -> str:
        return self.spec.connector_id

    def request_stop(self) -> None:
        """Stop reading from the source; buffered messages are still forwarded."""
        self._stop_requested = True
        if self._read_scope is not None:
            self._read_scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.started_at is None:
            self.started_at = datetime.now(UTC)
        self._read_scope = trio.CancelScope()
        if self._stop_requested:
            self._read_scope.cancel()
        self._reading_done = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._forward)
            self.status = "connecting"
            task_status.started()
            try:
                with self._read_scope:
                    await self._connect_loop()
            finally:
                self._reading_done = True
                self._wakeup.set()
                self.status = "stopped"

    async def _connect_loop(self) -> None:
        first = True
        while True:
            if not first:
                self.status = "reconnecting"
                await trio.sleep(self.backoff.next_delay())
                self.reconnects += 1
            first = False
            try:
                async with self.transport.connect(
                    self.spec.api_url,
                    max_message_bytes=self.max_message_bytes,
                    open_timeout=self.open_timeout,
                ) as conn:
                    self._connection = conn
                    try:
                        for message in self.spec.subscribe_messages:
                            # A string is sent as written (e.g. "ping"); other JSON as JSON.
                            if not isinstance(message, str):
                                message = orjson.dumps(message).decode()
                            await conn.send_text(message)
                        self.status = "running"
                        logger.info("connector %s connected", self.connector_id)
                        await self._read(conn)
                    finally:
                        self._binary_base += conn.binary_messages
                        self._connection = None
            except SourceUnavailable as exc:
                self.errors += 1
                self.last_error = str(exc)
                logger.warning("connector %s: %s", self.connector_id, exc)

    async def _read(self, conn: Connection) -> None:
        limit = self.buffer_limit_bytes
        while True:
            messages = await conn.receive_messages()
            now = time.time()
            self.last_message_at = now
            self.backoff.succeeded(trio.current_time())
            for message in messages:
                size = len(message)
                self.messages_received += 1
                self.bytes_received += size
                if self._buffered_bytes + size > limit:
                    self._record_gap(now)
                    continue
                self._frames.append(message)
                self._times.append(now)
                self._buffered_bytes += size
            if self._frames:
                self._wakeup.set()

    def _record_gap(self, now: float) -> None:
        if self._gap_count == 0:
            self._gap_first = now
            logger.warning(
                "connector %s: buffer full (%d bytes); counting dropped messages as a gap",
                self.connector_id,
                self.buffer_limit_bytes,
            )
        self._gap_count += 1
        self._gap_last = now

    async def _forward(self) -> None:
        while True:
            if not self._frames:
                if self._reading_done:
                    return
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            frames, times = self._frames, self._times
            self._frames, self._times = [], []
            size = sum(len(f) for f in frames)
            batch = SourceBatch(self.connector_id, self.spec.exchange, frames, times)
            try:
                if self._reading_done:
                    with trio.move_on_after(FLUSH_ON_STOP_SECONDS, shield=True) as scope:
                        await self.send_channel.send(batch)
                    if scope.cancelled_caught:
                        logger.error(
                            "connector %s: %d buffered messages not forwarded on stop",
                            self.connector_id,
                            len(frames),
                        )
                        return
                else:
                    await self.send_channel.send(batch)
            finally:
                self._buffered_bytes -= size

    def statistics(self) -> WebSocketStatistics:
        conn = self._connection
        gap = None
        if self._gap_count:
            gap = Gap(
                self._gap_count,
                datetime.fromtimestamp(self._gap_first, UTC),
                datetime.fromtimestamp(self._gap_last, UTC),
            )
        return WebSocketStatistics(
            status=self.status,
            messages_received=self.messages_received,
            bytes_received=self.bytes_received,
            binary_messages=self._binary_base + (conn.binary_messages if conn else 0),
            reconnects=self.reconnects,
            errors=self.errors,
            last_message_at=(
                datetime.fromtimestamp(self.last_message_at, UTC) if self.last_message_at else None
            ),
            last_error=self.last_error,
            started_at=self.started_at,
            buffered_messages=len(self._frames),
            buffered_bytes=self._buffered_bytes,
            buffer_limit_bytes=self.buffer_limit_bytes,
            gap=gap,
        )
