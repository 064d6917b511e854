"""The spool replayer actor: once PostgreSQL takes writes again, the spooled batches are
written back in order, each published to the hub after its commit (so realtime
subscribers get them as always), and a segment is deleted only when all of it committed.
Write-back is paced to ``rate`` records per second (0: unpaced), so a long backlog does not
take the whole database from saves and the other instances of a cluster.
While the spool is not empty every new connector record is spooled behind the old ones,
so order is kept; when the replayer reaches the end it closes the last segment under the
writer's spool lock and hands writing back to the writer.

Resource handling: owns a clone of the hub's input (closed on exit). Cancelling it (a
drain) leaves the remaining segments for the next start, which replays them first; a
segment partly written back is written again whole, and idempotency keys store nothing
twice.

Error handling: a database outage during replay is retried by the writer's own backoff;
a torn or corrupt entry is counted (``Spool.torn``/``corrupt``) and skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from ..hub import HubItem
from ..models import Record
from .codec import decode_records
from .spool import Spool

if TYPE_CHECKING:  # the writer imports this package for its spool
    from ..writer import BatchWriter

logger = logging.getLogger(__name__)

IDLE = 0.2  # seconds between looks while nothing is spooled


@attrs.frozen
class SpoolStatistics:
    spooling: bool
    bytes: int
    segments: int
    oldest_age_seconds: float | None
    records_spooled: int
    records_replayed: int
    records_lost: int
    torn_entries: int
    corrupt_entries: int


@attrs.define(eq=False)
class SpoolReplayer:
    spool: Spool
    writer: BatchWriter
    send_channel: trio.MemorySendChannel[HubItem]
    rate: int = 0
    replayed: int = 0
    segments: int = 0
    _next_at: float = 0.0  # when pacing lets the next entry go

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        spool, writer = self.spool, self.writer
        await trio.to_thread.run_sync(spool.open)
        if not spool.empty:
            logger.warning(
                "spool: %d bytes left by the last run; replaying them first", spool.bytes_used
            )
            writer.spooling = True
        task_status.started()
        try:
            await self._loop()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(spool.close)

    async def _loop(self) -> None:
        spool, writer = self.spool, self.writer
        with self.send_channel:
            while True:
                self.segments = len(await trio.to_thread.run_sync(spool.segments))
                if not writer.spooling:
                    await trio.sleep(IDLE)
                    continue
                closed = await trio.to_thread.run_sync(spool.closed_segments)
                if not closed:
                    async with writer.spool_lock:
                        await trio.to_thread.run_sync(spool.rotate)
                        closed = await trio.to_thread.run_sync(spool.closed_segments)
                        if not closed:
                            writer.spooling = False
                            writer.end_overflow()
                            logger.info("spool: replayed; writing directly again")
                            continue
                await self._replay(closed[0])

    async def _replay(self, segment: Path) -> None:
        """Write one segment back, in order. Entries are the writer's batches as they were
        spooled, often a hundred records each while spooling; they are written back
        gathered into batches of the writer's size, which replays several times faster
        (measured in ``bench``: stall-120s)."""
        spool = self.spool
        payloads = await trio.to_thread.run_sync(lambda: list(spool.read(segment)))
        gathered: list[Record] = []
        for payload in payloads:
            records = decode_records(payload)
            if gathered and records and records[0].source != gathered[0].source:
                await self._write_back(gathered)  # one table per write
                gathered = []
            gathered += records
            if len(gathered) >= self.writer.batch_size:
                await self._write_back(gathered)
                gathered = []
        if gathered:
            await self._write_back(gathered)
        await trio.to_thread.run_sync(spool.delete, segment)

    async def _write_back(self, records: list[Record]) -> None:
        if self.rate:
            self._next_at = max(self._next_at, trio.current_time())
            await trio.sleep_until(self._next_at)
            self._next_at += len(records) / self.rate
        stored = await self.writer.write_replayed(records)
        if stored:
            await self.send_channel.send(stored)
        self.replayed += len(records)

    def statistics(self) -> SpoolStatistics:
        spool = self.spool
        return SpoolStatistics(
            spooling=self.writer.spooling,
            bytes=spool.bytes_used,
            segments=self.segments,
            oldest_age_seconds=spool.oldest_age(),
            records_spooled=self.writer.rows_spooled,
            records_replayed=self.replayed,
            records_lost=self.writer.rows_spool_lost,
            torn_entries=spool.torn,
            corrupt_entries=spool.corrupt,
        )
