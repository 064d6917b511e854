"""Cluster-wide realtime: what other instances committed, published to this instance's
subscribers.

An instance that commits a batch while others are live sends, in the same transaction,
``NOTIFY sluice_feed`` with the ids it committed (as id ranges, see
``storage.cluster.notify_committed``); PostgreSQL delivers notifications at commit, in
commit order. The relay of every other instance reads those rows back in one query and
hands them to its hub as if its own writer had committed them, so subscribers get the
same frames, filters and lag policy. Each connector is written by one instance (its lease
owner), so its records arrive in commit order; gaps and test messages travel the same
channel as notices.

Why this mechanism (measured, see the README's cluster notes): forwarding frames between
instances would need a second network path and a peer list; polling the tables by id
misses rows that commit out of id order. NOTIFY of id ranges costs one small payload per
batch (not per record), read back with one indexed query per batch per instance.

Resource handling: owns its LISTEN connection and a clone of the hub's input, which it
closes when cancelled.

Error handling: a payload it cannot parse is logged and skipped; a read that fails (the
database went away) is retried briefly, then those ids are logged as not relayed.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import orjson
import trio

from ..errors import SinkUnavailable
from ..hub import HubItem, Notice
from ..models import StoredRecord
from ..storage import Database
from ..storage import cluster as sql

logger = logging.getLogger(__name__)

#: At most this many record ids are read back in one query (a bound on one hub batch).
RELAY_RECORDS = 10_000


@attrs.define
class _Pending:
    """Notified id runs not yet read back, by table, and how many records they name."""

    runs: dict[str, list[list[int]]] = attrs.Factory(dict)
    count: int = 0

    def add(self, table: str, runs: list[list[int]]) -> None:
        self.runs.setdefault(table, []).extend(runs)
        self.count += sum(hi - lo + 1 for lo, hi in runs)


@attrs.frozen
class RelayStatistics:
    notifications: int
    records_relayed: int
    notices_relayed: int
    not_relayed: int


@attrs.define(eq=False)
class Relay:
    db: Database
    hub_channel: trio.MemorySendChannel[HubItem]
    instance_id: str
    notifications: int = 0
    records_relayed: int = 0
    notices_relayed: int = 0
    not_relayed: int = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        send, receive = trio.open_memory_channel[list[tuple[str, str]]](64)
        with self.hub_channel:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.db.listen, [sql.FEED_CHANNEL], send)
                task_status.started()
                async for batch in receive:
                    payloads = [payload for _channel, payload in batch]
                    while True:  # and whatever else arrived meanwhile
                        try:
                            payloads += [payload for _channel, payload in receive.receive_nowait()]
                        except trio.WouldBlock:
                            break
                    await self.handle(payloads)

    async def handle(self, payloads: list[str]) -> None:
        """Relay notifications in order. The record ids of consecutive ones are read back
        in one query per table, not one per notification: with three instances committing
        small batches, a query per commit and instance fell behind (p99 6 s in the
        instances sweep, bench/README.md)."""
        pending = _Pending()
        for payload in payloads:
            try:
                message: dict[str, Any] = orjson.loads(payload)
            except orjson.JSONDecodeError:
                logger.warning("cluster relay: unreadable notification skipped")
                continue
            if message.get("i") == self.instance_id:
                continue  # our own commit: our hub has it already
            self.notifications += 1
            kind = message.get("t")
            if kind == "records":
                pending.add(message["s"], message["r"])
                if pending.count >= RELAY_RECORDS:
                    await self._flush(pending)
            elif kind in ("gap", "test"):
                notice = message.get("n")
                if isinstance(notice, dict):
                    await self._flush(pending)  # what came before it goes first
                    self.notices_relayed += 1
                    await self.hub_channel.send(Notice(notice.get("connector_id"), notice))
        await self._flush(pending)

    async def _flush(self, pending: _Pending) -> None:
        for table, runs in pending.runs.items():
            await self._records(table, runs)
        pending.runs.clear()
        pending.count = 0

    async def _records(self, table: str, runs: list[list[int]]) -> None:
        for attempt in range(3):
            try:
                rows = await self.db.run(sql.records_by_ids, table, runs)
                break
            except SinkUnavailable as exc:
                if attempt == 2:
                    count = sum(hi - lo + 1 for lo, hi in runs)
                    self.not_relayed += count
                    logger.error("cluster relay: %d records not relayed: %s", count, exc)
                    return
                await trio.sleep(0.2)
        stored = [StoredRecord(id=row["id"], record=sql.record_from_row(row)) for row in rows]
        if stored:
            self.records_relayed += len(stored)
            await self.hub_channel.send(stored)

    def statistics(self) -> RelayStatistics:
        return RelayStatistics(
            self.notifications, self.records_relayed, self.notices_relayed, self.not_relayed
        )
