"""The journal actor: gap records, connector errors and dead letters into PostgreSQL, and
gap events out to realtime subscribers.

Producers (connectors, the processor, the writer) call :meth:`Journal.record`, which never
blocks: the journal has a bounded queue, and when it is full (PostgreSQL down for a long
time) entries are dropped and *counted* (``dropped``), never allowed to stall ingestion.

Resource handling: the engine owns the queue's send end and closes it after every producer
stopped; the journal then writes what it holds and closes its clone of the hub's input.

Error handling: PostgreSQL unavailable → the batch is kept and retried with backoff; a
batch the database refuses is logged and dropped (it would never succeed).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs
import trio

from .backoff import Backoff
from .errors import BadMessage, SinkUnavailable
from .hub import HubItem, Notice
from .models import ErrorEvent, GapEvent, JournalEntry, Rejected
from .storage import Database
from .storage import connectors as sql

logger = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
BATCH = 500


@attrs.frozen
class JournalStatistics:
    written: int
    dropped: int
    queued: int


@attrs.define(eq=False)
class Journal:
    db: Database
    send_channel: trio.MemorySendChannel[JournalEntry]
    receive_channel: trio.MemoryReceiveChannel[JournalEntry]
    hub_channel: trio.MemorySendChannel[HubItem]
    written: int = 0
    dropped: int = 0
    #: Set by the cluster: gap notices also go to the other instances' subscribers.
    announce: Callable[[str, dict[str, object]], Awaitable[None]] | None = None

    @classmethod
    def create(cls, db: Database, hub_channel: trio.MemorySendChannel[HubItem]) -> Journal:
        send, receive = trio.open_memory_channel[JournalEntry](QUEUE_SIZE)
        return cls(db, send, receive, hub_channel)

    def record(self, entry: JournalEntry) -> None:
        """Queue an entry without waiting; count it as dropped if the queue is full."""
        try:
            self.send_channel.send_nowait(entry)
        except trio.WouldBlock:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.error("journal queue full: %d entries dropped so far", self.dropped)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.dropped += 1

    def close(self) -> None:
        self.send_channel.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                first = await self.receive_channel.receive()
            except trio.EndOfChannel:
                break
            entries = [first]
            while len(entries) < BATCH:
                try:
                    entries.append(self.receive_channel.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await self._write(entries)
            for entry in entries:
                if isinstance(entry, GapEvent):
                    notice = gap_event(entry)
                    await self.hub_channel.send(Notice(entry.connector_id, notice))
                    if self.announce is not None:
                        await self.announce("gap", notice)
        self.hub_channel.close()

    async def _write(self, entries: list[JournalEntry]) -> None:
        gaps = [e for e in entries if isinstance(e, GapEvent)]
        errors = [e for e in entries if isinstance(e, ErrorEvent)]
        rejects = [e for e in entries if isinstance(e, Rejected)]
        backoff = Backoff(base=0.2, cap=10.0)
        while True:
            try:
                await self.db.sink(sql.insert_events, gaps, errors, rejects)
            except SinkUnavailable:
                await trio.sleep(backoff.next_delay())
                continue
            except BadMessage as exc:
                logger.error("journal: database refused %d entries: %s", len(entries), exc)
                return
            self.written += len(entries)
            return

    def statistics(self) -> JournalStatistics:
        return JournalStatistics(
            self.written, self.dropped, self.receive_channel.statistics().current_buffer_used
        )


def gap_event(gap: GapEvent) -> dict[str, object]:
    """The realtime ``gap`` notice."""
    return {
        "type": "gap",
        "connector_id": gap.connector_id,
        "from": gap.gap_from,
        "to": gap.gap_to,
        "cause": gap.cause,
        "messages_lost": gap.messages_lost,
    }
