"""The WebSocket source actor: connect, subscribe, keep alive, drain the socket, reconnect.

Two tasks share the connector's buffer: the *reader* moves every message off the socket
into a byte-bounded buffer as fast as it arrives (so the connection keeps answering pings
even while downstream is slow), and the *forwarder* hands the whole buffer to the
processor as one :class:`~engine.models.SourceBatch` per send. When the buffer is full the
reader drops messages and counts them as a **gap** (count, first and last time) instead of
growing memory.

Keepalive, all driven by the reader's own deadlines (virtual-time testable): a protocol
ping every ``ping_interval`` seconds with ``pong_timeout`` to answer; the exchange's text
ping (OKX ``ping``) every ``app_ping_interval``; and, if ``stale_timeout`` is set, a
reconnect when no message arrived for that long (off by default, so quiet channels do not
cause false reconnects).

Every disconnect and every overflow becomes a :class:`~engine.models.GapEvent`, and every
connection error an :class:`~engine.models.ErrorEvent`, handed to ``journal`` (a
non-blocking callable) to be stored and broadcast.

Resource handling: the caller owns the send channel (a clone of the raw channel's send
end) and closes it after the last :meth:`run`, so a supervisor can call :meth:`run` again
after a crash. :meth:`request_stop` stops reading; whatever is buffered is then forwarded
(time-limited) before :meth:`run` returns.

Error handling: connection failures (:class:`~engine.errors.SourceUnavailable`) are
counted, journaled and retried forever with exponential backoff and full jitter (reset
after a stable period); anything else is a bug and propagates to the supervisor.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from datetime import UTC, datetime
from typing import cast
from urllib.parse import urlencode

import attrs
import orjson
import trio

from .backoff import Backoff
from .errors import SourceRefused, SourceUnavailable
from .models import ConnectorSpec, ErrorEvent, GapEvent, Journal, SourceBatch, no_journal
from .normalize import Normalizer, normalizer_for
from .sources import new_session_id
from .stopping import StopSwitch
from .transport import Connection, Transport

logger = logging.getLogger(__name__)

MAX_BATCH_FRAMES = 500
#: Seconds between attempts after a permanent failure (a destination the egress policy
#: refuses, a subscription the exchange refuses): the connector is in ``error`` meanwhile,
#: not reconnecting at full speed.
PERMANENT_BACKOFF = 300.0
FLUSH_ON_STOP_SECONDS = 5.0


def _wall(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@attrs.frozen
class _Chunk:
    """The messages of one receive, buffered: joined, with their lengths and arrival."""

    data: bytes
    lengths: list[int]
    received: float


@attrs.frozen
class Overflow:
    """Messages dropped because the connector's buffer was full (all of this run)."""

    count: int
    first_at: datetime
    last_at: datetime


@attrs.frozen
class WebSocketStatistics:
    status: str
    messages_received: int
    bytes_received: int
    binary_messages: int
    oversized_messages: int
    reconnects: int
    errors: int
    last_message_at: datetime | None
    last_error: str | None
    started_at: datetime | None
    buffered_messages: int
    buffered_bytes: int
    buffer_limit_bytes: int
    pings_sent: int
    pongs_received: int
    gap: Overflow | None


@attrs.define(eq=False)
class WebSocketConnector:
    spec: ConnectorSpec
    send_channel: trio.MemorySendChannel[SourceBatch]
    transport: Transport
    max_message_bytes: int = 4 * 1024 * 1024
    buffer_limit_bytes: int = 64 * 1024 * 1024
    open_timeout: float = 10.0
    backoff: Backoff = attrs.field(factory=lambda: Backoff(base=0.5, cap=30.0, reset_after=30.0))
    journal: Journal = no_journal
    #: Decrypted handshake headers and query parameters (never logged).
    headers: dict[str, str] = attrs.field(factory=dict, repr=False)
    query_params: dict[str, str] = attrs.field(factory=dict, repr=False)

    status: str = "inactive"
    messages_received: int = 0
    bytes_received: int = 0
    reconnects: int = 0
    errors: int = 0
    pings_sent: int = 0
    last_message_at: float | None = None
    last_error: str | None = None
    started_at: datetime | None = None
    #: New on every run (start, restart after a crash): tells a client the sessions apart.
    session_id: str | None = None
    _forward_idle: bool = False  # the forwarding task waits for frames (none in hand)
    _last_data: float = 0.0  # trio time of the last message received
    #: What is buffered for the forwarding task: one entry per receive (see ``_accept``).
    _chunks: deque[_Chunk] = attrs.field(factory=deque)
    _buffered_messages: int = 0
    _buffered_bytes: int = 0
    _closed_counts: list[int] = attrs.field(factory=lambda: [0, 0, 0])
    _connection: Connection | None = None
    _gap_total: int = 0
    _gap_first: float = 0.0
    _gap_last: float = 0.0
    _overflow_count: int = 0
    _overflow_first: float = 0.0
    _wakeup: trio.Event = attrs.field(factory=trio.Event)
    _stop: StopSwitch = attrs.field(factory=StopSwitch)
    _reading_done: bool = False
    _normalizer: Normalizer | None = None
    _connection_scope: trio.CancelScope | None = None
    _refused: str | None = None  # why the source refused the subscription (``refuse``)

    def __attrs_post_init__(self) -> None:
        if self.spec.field_mapping:
            self._normalizer = normalizer_for(self.spec.exchange, self.spec.field_mapping)

    @property
    def connector_id(self) -> str:
        return self.spec.connector_id

    def refuse(self, detail: str) -> None:
        """The source refused the subscription (the connector manager's judgement of an
        error event): drop the connection; the next try comes after PERMANENT_BACKOFF."""
        self._refused = detail
        if self._connection_scope is not None:
            self._connection_scope.cancel()

    def _raise_if_refused(self) -> None:
        if self._refused is not None:
            refused, self._refused = self._refused, None
            raise SourceRefused(f"subscription refused: {refused}", "subscription_refused")

    def request_stop(self) -> None:
        """Stop reading from the source; buffered messages are still forwarded."""
        self._stop.request()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.started_at is None:
            self.started_at = datetime.now(UTC)
        self.session_id = new_session_id()
        stop_scope = self._stop.new_scope()
        self._reading_done = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._forward)
            self.status = "connecting"
            task_status.started()
            try:
                with stop_scope:
                    await self._connect_loop()
            finally:
                self._end_overflow()
                self._reading_done = True
                self._wakeup.set()
                self.status = "stopped"

    async def _connect_loop(self) -> None:
        lost_at: float | None = None  # wall time the previous connection was lost
        lost_cause = ""
        first = True
        while True:
            if not first:
                self.status = "reconnecting"
                await trio.sleep(self.backoff.next_delay())
                self.reconnects += 1
            first = False
            try:
                self._raise_if_refused()  # a refusal judged after its connection ended
                with trio.CancelScope() as self._connection_scope:
                    async with self.transport.connect(
                        self._url(),
                        max_message_bytes=self.max_message_bytes,
                        open_timeout=self.open_timeout,
                        headers=self.headers,
                    ) as conn:
                        self._connection = conn
                        try:
                            await self._subscribe(conn)
                            self.status = "running"
                            logger.info("connector %s connected", self.connector_id)
                            if lost_at is not None:
                                self._journal_gap(lost_at, time.time(), lost_cause, None)
                                lost_at = None
                            await self._read(conn)
                        finally:
                            self._connection = None
                            for i, n in enumerate(
                                (conn.binary_messages, conn.oversized_messages, conn.pongs)
                            ):
                                self._closed_counts[i] += n
                self._raise_if_refused()
            except SourceRefused as exc:
                # Permanent until the configuration changes (the egress policy, the
                # subscription): error state, said once, and tried again only after
                # PERMANENT_BACKOFF seconds, not at reconnect speed.
                self._end_overflow()
                self.errors += 1
                if self.status != "error" or self.last_error != str(exc):
                    logger.error(
                        "connector %s: %s; retrying every %g s",
                        self.connector_id,
                        exc,
                        PERMANENT_BACKOFF,
                    )
                    self.journal(
                        ErrorEvent(self.connector_id, datetime.now(UTC), exc.kind, str(exc))
                    )
                self.last_error = str(exc)
                self.status = "error"
                await trio.sleep(PERMANENT_BACKOFF)
            except SourceUnavailable as exc:
                self._end_overflow()
                self.errors += 1
                if self.last_error != str(exc):  # a repeated failure is said once
                    logger.warning("connector %s: %s", self.connector_id, exc)
                self.last_error = str(exc)
                self.journal(ErrorEvent(self.connector_id, datetime.now(UTC), exc.kind, str(exc)))
                if lost_at is None and self.status == "running":
                    lost_at = self.last_message_at or time.time()
                    lost_cause = exc.kind

    def _url(self) -> str:
        if not self.query_params:
            return self.spec.api_url
        separator = "&" if "?" in self.spec.api_url else "?"
        return self.spec.api_url + separator + urlencode(self.query_params)

    async def _subscribe(self, conn: Connection) -> None:
        for message in self.spec.subscribe_messages:
            # A string is sent as written (e.g. "ping"); other JSON values as JSON.
            if not isinstance(message, str):
                message = orjson.dumps(message).decode()
            await conn.send_text(message)

    async def _read(self, conn: Connection) -> None:
        spec = self.spec
        now = trio.current_time()
        inf = math.inf
        next_ping = now + spec.ping_interval if spec.ping_interval > 0 else inf
        next_app_ping = now + spec.app_ping_interval if spec.app_ping else inf
        pong_due = inf
        pongs_seen = conn.pongs
        self._last_data = now
        while True:
            # One cancel scope per timer, not per message: entering and leaving a scope
            # for every receive was ≈ 15% of the engine's CPU with 200 quiet connectors.
            # The scope ends at the earliest timer as it stood when it began; only then are
            # the timers judged (a pong or newer data seen by then simply moves them on).
            # Messages meanwhile go to _take, from the shared socket reader's task for
            # plain-TCP sources (engine.transport.SocketReader), from this one otherwise.
            stale_at = self._last_data + spec.stale_timeout if spec.stale_timeout > 0 else inf
            with trio.move_on_at(min(next_ping, next_app_ping, pong_due, stale_at)):
                await conn.deliver(self._take)
            now = trio.current_time()
            stale_at = self._last_data + spec.stale_timeout if spec.stale_timeout > 0 else inf
            if conn.pongs != pongs_seen:
                pongs_seen, pong_due = conn.pongs, inf
            if now >= pong_due:
                raise SourceUnavailable(f"no pong within {spec.pong_timeout:g} s", "pong_timeout")
            if now >= stale_at:
                raise SourceUnavailable(
                    f"no message for {spec.stale_timeout:g} s (stale feed)", "stale"
                )
            if now >= next_ping:
                await conn.ping()
                self.pings_sent += 1
                next_ping = now + spec.ping_interval
                if pong_due == inf:
                    pong_due = now + spec.pong_timeout
            if now >= next_app_ping and spec.app_ping:
                await conn.send_text(spec.app_ping)
                next_app_ping = now + spec.app_ping_interval

    def _take(self, messages: list[bytes]) -> None:
        self._last_data = now = trio.current_time()
        self._accept(messages)
        self.backoff.succeeded(now)

    def _accept(self, messages: list[bytes]) -> None:
        now = time.time()
        self.last_message_at = now
        limit = self.buffer_limit_bytes
        taken: list[bytes] = []
        size_taken = 0
        for message in messages:
            size = len(message)
            self.messages_received += 1
            self.bytes_received += size
            if self._buffered_bytes + size_taken + size > limit:
                self._record_overflow(now)
                continue
            if self._overflow_count:
                self._end_overflow()
            taken.append(message)
            size_taken += size
        if not taken:
            return
        if self._forward_idle and not self._chunks and len(taken) <= MAX_BATCH_FRAMES:
            # Nothing older is waiting: hand the batch on directly when the channel has
            # room, sparing a wake-up of the forwarding task (a quiet feed's common case).
            try:
                frames = cast(list[bytes | str], taken)  # a list of bytes is one (read only)
                self.send_channel.send_nowait(self._batch(frames, [now] * len(taken)))
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the forwarding task takes it from here, as usual
            else:
                return
        # Buffered, one receive's messages are kept as one joined ``bytes`` and their
        # lengths, not as a small object each: a backlog of 200,000 messages was 200,000
        # objects mixed into the allocator's arenas with everything else, which stayed
        # spread out (RSS) long after the backlog was gone. Measured at max rate: see
        # bench/README.md, "Memory at max rate".
        self._chunks.append(_Chunk(b"".join(taken), [len(m) for m in taken], now))
        self._buffered_messages += len(taken)
        self._buffered_bytes += size_taken
        self._wakeup.set()

    def _take_buffered(self, limit: int) -> tuple[list[bytes | str], list[float]]:
        """Up to ``limit`` buffered messages, oldest first, with their receive times."""
        frames: list[bytes | str] = []
        times: list[float] = []
        chunks = self._chunks
        while chunks and len(frames) < limit:
            chunk = chunks[0]
            lengths = chunk.lengths
            take = min(limit - len(frames), len(lengths))
            data = chunk.data
            pos = 0
            for n in lengths[:take] if take < len(lengths) else lengths:
                frames.append(data[pos : pos + n])
                pos += n
            times += [chunk.received] * take
            if take < len(lengths):
                chunks[0] = _Chunk(data[pos:], lengths[take:], chunk.received)
            else:
                chunks.popleft()
        self._buffered_messages -= len(frames)
        return frames, times

    def _record_overflow(self, now: float) -> None:
        if self._overflow_count == 0:
            self._overflow_first = now
            if self._gap_total == 0:
                self._gap_first = now
            logger.warning(
                "connector %s: buffer full (%d bytes); counting dropped messages as a gap",
                self.connector_id,
                self.buffer_limit_bytes,
            )
        self._overflow_count += 1
        self._gap_total += 1
        self._gap_last = now

    def _end_overflow(self) -> None:
        if self._overflow_count:
            self._journal_gap(
                self._overflow_first, self._gap_last, "buffer_overflow", self._overflow_count
            )
            self._overflow_count = 0

    def _journal_gap(self, start: float, end: float, cause: str, lost: int | None) -> None:
        self.journal(GapEvent(self.connector_id, _wall(start), _wall(end), cause, lost))

    async def _forward(self) -> None:
        while True:
            if not self._chunks:
                if self._reading_done:
                    return
                self._wakeup = trio.Event()
                self._forward_idle = True
                try:
                    await self._wakeup.wait()
                finally:
                    self._forward_idle = False
                continue
            # Bounded batches: the processor normalizes one batch per task step, and a
            # backlog of thousands of frames in one step would stall every other task.
            frames, times = self._take_buffered(MAX_BATCH_FRAMES)
            if not await self._send_batch(frames, times):
                logger.error(
                    "connector %s: %d buffered messages not forwarded on stop",
                    self.connector_id,
                    len(frames) + self._buffered_messages,
                )
                return

    def _batch(self, frames: list[bytes | str], times: list[float]) -> SourceBatch:
        return SourceBatch(
            self.connector_id,
            self.spec.exchange,
            frames,
            times,
            self._normalizer,
            session_id=self.session_id,
        )

    async def _send_batch(self, frames: list[bytes | str], times: list[float]) -> bool:
        """Hand one batch to the processor; False if it had to be dropped on stop."""
        size = sum(len(f) for f in frames)
        batch = self._batch(frames, times)
        try:
            if self._reading_done:
                with trio.move_on_after(FLUSH_ON_STOP_SECONDS, shield=True) as scope:
                    await self.send_channel.send(batch)
                if scope.cancelled_caught:
                    return False
            else:
                await self.send_channel.send(batch)
        finally:
            self._buffered_bytes -= size
        return True

    def statistics(self) -> WebSocketStatistics:
        conn = self._connection
        live = (conn.binary_messages, conn.oversized_messages, conn.pongs) if conn else (0, 0, 0)
        binary, oversized, pongs = (a + b for a, b in zip(self._closed_counts, live, strict=True))
        gap = None
        if self._gap_total:
            gap = Overflow(self._gap_total, _wall(self._gap_first), _wall(self._gap_last))
        return WebSocketStatistics(
            status=self.status,
            messages_received=self.messages_received,
            bytes_received=self.bytes_received,
            binary_messages=binary,
            oversized_messages=oversized,
            reconnects=self.reconnects,
            errors=self.errors,
            last_message_at=_wall(self.last_message_at) if self.last_message_at else None,
            last_error=self.last_error,
            started_at=self.started_at,
            buffered_messages=self._buffered_messages,
            buffered_bytes=self._buffered_bytes,
            buffer_limit_bytes=self.buffer_limit_bytes,
            pings_sent=self.pings_sent,
            pongs_received=pongs,
            gap=gap,
        )
