"""The retention actor: deletes old records in the background, in small batches.

``SLUICE_RETENTION_DAYS`` applies to every record table and to the journal tables; a
connector's own ``retention_days`` overrides it for that connector's records. Each batch
is its own short transaction (at most ``batch`` rows by primary key), so no long lock ever
blocks the writer. Off when neither is set.

Error handling: PostgreSQL unavailable → skip this round and try at the next interval.
"""

from __future__ import annotations

import logging

import attrs
import trio
import trio.lowlevel

from .errors import SinkUnavailable
from .storage import Database
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
        """One pass over every table; returns the rows deleted."""
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
