"""The processor actor: raw frames → normalized records, one batch in, one batch out.

It owns the per-connector message accounting: every frame is counted as exactly one of
*normalized* (it produced records), *control* (ack, pong, exchange error) or *rejected*
(with a category such as ``non_json``), so ``received = normalized + control + rejected``
holds for what reached it.

Resource handling: the engine owns both channel ends. The processor closes its send end
only after its receive end is exhausted (clean shutdown flows downstream); on a crash it
leaves them open so its supervisor can restart it.

Error handling: :class:`~engine.errors.BadMessage` from decoding or normalizing is counted
and logged (rate-limited) per connector; other exceptions are bugs and propagate.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import attrs
import trio

from .errors import BadMessage
from .models import (
    ErrorEvent,
    Journal,
    Record,
    Rejected,
    SourceBatch,
    evolve_record,
    no_journal,
)
from .normalize import Context, Control, decode, normalizer_for
from .normalize.fast import FAST_PATHS

logger = logging.getLogger(__name__)

# Stop gathering waiting batches into one list for the writer beyond this many records.
# It also bounds what a backlog holds as records, by far their largest form (≈ 700 bytes
# a trade decoded, 132 raw in the connector's buffer): the writer's channel holds
# RECORD_BATCHES lists, so with 2,000 a max-rate burst kept ≈ 64,000 records decoded
# (45 MB). Full max-1 runs, alternating, 2026-12-06: peak RSS 223 MiB with 2,000, 184
# and 186 with 500, at the same rate (66k; 72k and 65k msg/s); max-10 247 -> 192, 194.
# Quiet feeds' lists are far below either bound (connectors-200: tens of records).
COALESCE_RECORDS = 500
LOG_FIRST_REJECTS = 10
LOG_EVERY_REJECT = 1000


@attrs.define
class SourceCounters:
    """What the processor saw from one connector."""

    frames: int = 0
    records: int = 0
    control: int = 0
    rejected: int = 0
    exchange_errors: int = 0
    last_error: str | None = None
    rejected_by_category: Counter[str] = attrs.field(factory=Counter)


@attrs.frozen
class ProcessorStatistics:
    batches_in: int
    frames_in: int
    records_out: int
    rejected: int
    control: int
    sources: dict[str, SourceCounters]


@attrs.define(eq=False)
class Processor:
    receive_channel: trio.MemoryReceiveChannel[SourceBatch]
    send_channel: trio.MemorySendChannel[list[Record]]
    journal: Journal = no_journal
    #: Told of every error event a source sends (connector id, the error): the connector
    #: manager decides whether it means the subscription is refused.
    on_exchange_error: Callable[[str, str], None] = lambda connector_id, detail: None
    batches_in: int = 0
    frames_in: int = 0
    records_out: int = 0
    _sources: dict[str, SourceCounters] = attrs.field(factory=dict)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        receive = self.receive_channel
        async for batch in receive:
            records = self.process(batch)
            # Many small batches (hundreds of quiet connectors, REST polls) waiting at once
            # go on as one list: one hop to the writer instead of one per batch.
            while len(records) < COALESCE_RECORDS:
                try:
                    records += self.process(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if records:
                await self.send_channel.send(records)
        self.send_channel.close()

    def process(self, batch: SourceBatch) -> list[Record]:
        """Normalize one batch (pure apart from the counters)."""
        counters = self._sources.get(batch.connector_id)
        if counters is None:
            counters = self._sources[batch.connector_id] = SourceCounters()
        ctx = Context(batch.connector_id, batch.exchange, batch.session_id)
        normalize = batch.normalizer or normalizer_for(batch.exchange)
        # A connector with a field mapping has its own normalizer: never the fast path.
        fast = None if batch.normalizer else FAST_PATHS.get(batch.exchange)
        records: list[Record] = []
        last_ts, received_at = None, None
        for frame, ts in zip(batch.frames, batch.received_at, strict=True):
            if ts != last_ts:  # frames from one socket read share their receive time
                last_ts, received_at = ts, datetime.fromtimestamp(ts, UTC)
            assert received_at is not None
            if fast is not None and type(frame) is bytes:
                done = fast(frame, ctx, received_at)
                if done is not None:
                    records += done
                    continue
            try:
                msg, raw = decode(frame)
                result = normalize(msg, raw, ctx, received_at)
            except BadMessage as exc:
                self._reject(batch.connector_id, counters, exc)
                raw_bytes = frame if isinstance(frame, bytes) else frame.encode("utf-8", "replace")
                self.journal(
                    Rejected(batch.connector_id, received_at, exc.category, exc.detail, raw_bytes)
                )
                continue
            if isinstance(result, Control):
                counters.control += 1
                if result.kind == "error":
                    counters.exchange_errors += 1
                    if counters.last_error != result.detail:  # a repeated error is said once
                        logger.warning("connector %s: %s", batch.connector_id, result.detail)
                    counters.last_error = result.detail
                    self.journal(
                        ErrorEvent(batch.connector_id, received_at, "exchange_error", result.detail)
                    )
                    if batch.connector_id is not None:
                        self.on_exchange_error(batch.connector_id, result.detail)
                continue
            records.extend(result)
        if batch.source == "rest" and records:
            records = [
                evolve_record(
                    r,
                    source="rest",
                    status_code=batch.status_code,
                    response_time_ms=batch.response_time_ms,
                )
                for r in records
            ]
        counters.frames += len(batch.frames)
        counters.records += len(records)
        self.batches_in += 1
        self.frames_in += len(batch.frames)
        self.records_out += len(records)
        return records

    def _reject(self, connector_id: str, counters: SourceCounters, exc: BadMessage) -> None:
        counters.rejected += 1
        counters.rejected_by_category[exc.category] += 1
        counters.last_error = str(exc)
        n = counters.rejected
        if n <= LOG_FIRST_REJECTS or n % LOG_EVERY_REJECT == 0:
            logger.warning("connector %s: rejected message #%d (%s)", connector_id, n, exc)

    def counters_for(self, connector_id: str) -> SourceCounters:
        return self._sources.get(connector_id) or SourceCounters()

    def forget(self, connector_id: str) -> None:
        self._sources.pop(connector_id, None)

    def statistics(self) -> ProcessorStatistics:
        return ProcessorStatistics(
            batches_in=self.batches_in,
            frames_in=self.frames_in,
            records_out=self.records_out,
            rejected=sum(c.rejected for c in self._sources.values()),
            control=sum(c.control for c in self._sources.values()),
            sources=dict(self._sources),
        )
