"""The retention actor: keeps the record tables' day partitions ahead of time and drops
old data in the background.

``SLUICE_RETENTION_DAYS`` applies to every record table and to the journal tables; a
connector's own ``retention_days`` overrides it for that connector's records.

* Under the default policy a record table loses whole UTC days: each day partition wholly
  older than the limit is detached concurrently and dropped: seconds for 50 million rows,
  without blocking inserts (their commits can wait longer while the filesystem frees the
  day's files: docs/storage.md, bench ``retention-50M``). A record is so kept at least the
  configured days and less than one day more. A day that also holds records of a
  connector whose own retention is longer is deleted row by row instead, sparing those.
* A connector's own retention deletes its rows, and the journal tables theirs, in bounded
  batches, each its own short transaction (at most ``batch`` rows), so no long lock ever
  blocks the writer.

Partitions from yesterday to two days ahead are created on every pass, whether or not
retention is set; the writer creates any other day it needs on demand.

Error handling: PostgreSQL unavailable → skip this round and try at the next interval.
"""

from __future__ import annotations

import logging

import attrs
import psycopg
import trio
import trio.lowlevel

from .errors import SinkUnavailable
from .storage import Database, partitions
from .storage import retention as sql

logger = logging.getLogger(__name__)


@attrs.define(eq=False)
class Retention:
    db: Database
    default_days: int | None
    interval: float = 3600.0
    batch: int = 5000
    deleted: int = 0
    rounds: int = 0
    dropped: list[str] = attrs.field(factory=list)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        next_at = trio.current_time()
        while True:
            try:
                await self.run_once()
            except SinkUnavailable as exc:
                logger.warning("retention skipped: %s", exc)
            next_at += self.interval
            await trio.sleep_until(next_at)

    async def run_once(self) -> int:
        """One pass over every table; returns the rows deleted (dropped partitions not
        counted: see :attr:`dropped`)."""
        created = await self.db.run(partitions.ensure_ahead)
        if created:
            logger.info("created partitions %s", ", ".join(created))
        if self.default_days:
            await self._drop_expired(self.default_days)
        await self.db.refresh_days()
        total = 0
        for job in await self.db.run(sql.plan, self.default_days):
            while True:
                n = await self.db.run(sql.delete_batch, job, self.batch)
                total += n
                if n < self.batch:
                    break
                await trio.lowlevel.checkpoint()  # let the writer have the database between batches
        self.rounds += 1
        self.deleted += total
        if total:
            logger.info("retention deleted %d old rows", total)
        return total

    async def _drop_expired(self, days: int) -> None:
        keep = await self.db.run(sql.kept_longer, days)
        for table in partitions.RECORD_TABLES:
            for partition in await self.db.run(partitions.expired, table, days, keep):
                try:
                    highest = await trio.to_thread.run_sync(
                        partitions.drop, self.db.dsn, table, partition
                    )
                except psycopg.OperationalError as exc:
                    raise SinkUnavailable(f"dropping {partition}: {exc}") from exc
                self.dropped.append(partition)
                logger.info("retention dropped partition %s (ids up to %s)", partition, highest)
