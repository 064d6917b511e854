"""The REST source actor: poll an HTTP endpoint on a drift-free schedule.

Ticks fall on a fixed grid (``start + n * polling_interval``), so timing never drifts.
At most one request is in flight: a response slower than the interval makes the poller
skip the ticks it missed (counted in ``skipped_ticks``), never burst to catch up. Each
response becomes one :class:`~engine.models.SourceBatch` frame; the processor turns a JSON
array into one record per element and an object into one record, keeping the status code
and response time on each.

Error handling: network errors, timeouts and 5xx are retried within the tick with
exponential backoff and jitter (at most ``retries`` times); a 429 waits at least its
``Retry-After`` (seconds or an HTTP date) before the next request; other 4xx are errors
without retry. Every error is counted and journaled with a redacted message. A denied
destination (egress guard) is an error like any other. Bugs propagate to the supervisor.

Resource handling: the poller closes its HTTP client's kept connection when it stops (a
shared httpx client belongs to the engine); the caller owns the send channel.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from datetime import UTC, datetime

import attrs
import orjson
import trio

from .auth import Credentials, sign
from .backoff import Backoff
from .errors import SourceRefused, SourceUnavailable
from .http_client import HttpClient, ResponseTooLarge
from .metrics import Histogram
from .models import ConnectorSpec, ErrorEvent, Journal, SourceBatch, no_journal
from .normalize import Normalizer, normalizer_for
from .sources import new_session_id
from .stopping import StopSwitch

TICK_LATENESS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
logger = logging.getLogger(__name__)

#: Seconds between attempts after a permanent failure (401/403, a destination the egress
#: policy refuses): the connector shows ``error`` meanwhile instead of failing every tick.
PERMANENT_BACKOFF = 300.0

MAX_RETRY_AFTER = 3600.0


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (wall time), or ``None`` if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


@attrs.frozen
class RestStatistics:
    status: str
    messages_received: int
    requests: int
    skipped_ticks: int
    last_status_code: int | None
    last_response_ms: float | None
    reconnects: int
    errors: int
    last_message_at: datetime | None
    last_error: str | None
    started_at: datetime | None
    binary_messages: int = 0
    oversized_messages: int = 0
    gap: None = None


@attrs.define(eq=False)
class RestPoller:
    spec: ConnectorSpec
    send_channel: trio.MemorySendChannel[SourceBatch]
    client: HttpClient
    credentials: Credentials = attrs.field(factory=Credentials, repr=False)
    headers: dict[str, str] = attrs.field(factory=dict, repr=False)
    query_params: dict[str, str] = attrs.field(factory=dict, repr=False)
    journal: Journal = no_journal
    max_response_bytes: int = 16 * 1024 * 1024
    retries: int = 3
    backoff_base: float = 0.5
    status: str = "inactive"
    responses: int = 0
    requests: int = 0
    skipped_ticks: int = 0
    errors: int = 0
    last_status_code: int | None = None
    last_response_ms: float | None = None
    last_message_at: float | None = None
    last_error: str | None = None
    started_at: datetime | None = None
    #: New on every run (start, restart after a crash): tells a client the sessions apart.
    session_id: str | None = None
    # How late each tick started against its grid time; shared by all pollers.
    tick_lateness: Histogram = attrs.field(factory=lambda: Histogram(TICK_LATENESS_BUCKETS))
    _not_before: float = 0.0
    _stop: StopSwitch = attrs.field(factory=StopSwitch)
    _normalizer: Normalizer | None = None

    def __attrs_post_init__(self) -> None:
        if self.spec.field_mapping:
            self._normalizer = normalizer_for(self.spec.exchange, self.spec.field_mapping)

    @property
    def connector_id(self) -> str:
        return self.spec.connector_id

    def request_stop(self) -> None:
        self._stop.request()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.started_at is None:
            self.started_at = datetime.now(UTC)
        self.session_id = new_session_id()
        stop_scope = self._stop.new_scope()
        self.status = "running"
        task_status.started()
        interval = self.spec.polling_interval / 1000
        try:
            with stop_scope:
                next_tick = trio.current_time()
                while True:
                    due = max(next_tick, self._not_before)
                    await trio.sleep_until(due)
                    self.tick_lateness.observe(trio.current_time() - due)
                    await self.poll_once()
                    next_tick += interval
                    now = trio.current_time()
                    if now > next_tick:
                        missed = math.floor((now - next_tick) / interval) + 1
                        self.skipped_ticks += missed
                        next_tick += missed * interval
        finally:
            self.status = "stopped"
            with trio.CancelScope(shield=True):
                await self.client.aclose()

    async def poll_once(self) -> None:
        """One tick: the request, with retries; a usable response goes downstream."""
        backoff = Backoff(base=self.backoff_base, cap=30.0)
        for attempt in range(self.retries + 1):
            try:
                result = await self._request()
            except SourceRefused as exc:
                self._permanent(exc.kind, str(exc))
                return
            except SourceUnavailable as exc:
                self._error(exc.kind, str(exc))
                if attempt < self.retries:
                    await trio.sleep(backoff.next_delay())
                continue
            if result is None:
                return  # a final error (4xx, 429, too large): recorded, no retry
            code, body, elapsed_ms, received = result
            if code >= 500:
                self._error("http_status", f"HTTP {code}")
                if attempt < self.retries:
                    await trio.sleep(backoff.next_delay())
                continue
            self.responses += 1
            self.last_message_at = received
            batch = SourceBatch(
                self.connector_id,
                self.spec.exchange,
                [body],
                [received],
                self._normalizer,
                source="rest",
                status_code=code,
                response_time_ms=elapsed_ms,
                session_id=self.session_id,
            )
            await self.send_channel.send(batch)
            return

    async def _request(self) -> tuple[int, bytes, float, float] | None:
        spec = self.spec
        body = None if spec.request_body is None else orjson.dumps(spec.request_body)
        headers = {"Accept": "application/json", **self.headers}
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
        outgoing = sign(
            spec.http_method,
            spec.api_url,
            self.query_params,
            headers,
            body,
            spec.auth_type,
            spec.auth_options,
            self.credentials,
            datetime.now(UTC),
        )
        self.requests += 1
        started = trio.current_time()
        try:
            response = await self.client.request(
                outgoing.method,
                outgoing.url,
                outgoing.headers,
                outgoing.body,
                self.max_response_bytes,
            )
        except ResponseTooLarge:
            self._error("oversized", f"response larger than {self.max_response_bytes} bytes")
            return None
        elapsed_ms = (trio.current_time() - started) * 1000
        self.last_response_ms = elapsed_ms
        code = response.status
        self.last_status_code = code
        if code == 429:
            wait = retry_after_seconds(response.headers.get("retry-after"), time.time())
            wait = max(wait if wait is not None else 0.0, self.backoff_base)
            self._not_before = trio.current_time() + wait
            self._error("rate_limited", f"HTTP 429; waiting {wait:g} s")
            return None
        if code in (401, 403):
            self._permanent("unauthorized", f"HTTP {code}: the source refuses these credentials")
            return None
        if 400 <= code < 500:
            self._error("http_status", f"HTTP {code}")
            return None
        if self.status == "error":
            logger.info("connector %s: the source answers again", self.connector_id)
            self.status = "running"
        return code, response.body, elapsed_ms, time.time()

    def _permanent(self, kind: str, message: str) -> None:
        """A failure that retrying soon will not fix (401/403, a refused destination):
        ``error`` with the reason, said once per change, next try after PERMANENT_BACKOFF."""
        self.errors += 1
        if self.status != "error" or self.last_error != message:
            logger.error(
                "connector %s: %s; retrying every %g s",
                self.connector_id,
                message,
                PERMANENT_BACKOFF,
            )
            self.journal(ErrorEvent(self.connector_id, datetime.now(UTC), kind, message))
        self.last_error = message
        self.status = "error"
        self._not_before = trio.current_time() + PERMANENT_BACKOFF

    def _error(self, kind: str, message: str) -> None:
        self.errors += 1
        if self.last_error != message:  # a repeated failure is said once, not every tick
            logger.warning("connector %s: %s", self.connector_id, message)
        self.last_error = message
        self.journal(ErrorEvent(self.connector_id, datetime.now(UTC), kind, message))

    def statistics(self) -> RestStatistics:
        return RestStatistics(
            status=self.status,
            messages_received=self.responses,
            requests=self.requests,
            skipped_ticks=self.skipped_ticks,
            last_status_code=self.last_status_code,
            last_response_ms=self.last_response_ms,
            reconnects=0,
            errors=self.errors,
            last_message_at=(
                datetime.fromtimestamp(self.last_message_at, UTC) if self.last_message_at else None
            ),
            last_error=self.last_error,
            started_at=self.started_at,
        )
