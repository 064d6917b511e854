"""The batching writer actor: records in, committed records (with database ids) out.

It writes what has arrived as soon as no write is running; while one is, records gather
until ``batch_size`` are waiting, the oldest has waited ``max_age`` seconds, or the write
ends (group commit). Each batch is written with COPY in one transaction, and only
after the commit handed to the broadcast hub, so a realtime ``id`` is always a database id.
Up to ``concurrency`` batches are written at once (each on its own connection), so Python
formats one batch while PostgreSQL works on the previous; batches are still handed on in
the order they were formed.

Error handling:

* PostgreSQL unavailable (:class:`~engine.errors.SinkUnavailable`): the batch is kept and
  retried with backoff, forever; upstream channels fill and senders block (backpressure).
* Data refused (``BadMessage("db_rejected")``): the batch is split in halves until the bad
  records are isolated; they are counted and logged, the rest commits.
* Retried batches never duplicate: inserts skip records whose (connector, dedup key) is
  already stored. A retry after a lost COMMIT reply (and every write back from the spool,
  whose records may have been committed by the attempt that sent them there) also finds
  the rows that attempt stored, by key and receive time, and publishes them: they reach
  realtime subscribers once, not never.

Resource handling: the engine owns both channel ends; the writer closes its send end only
after its receive end is exhausted and the last batch committed.
"""

from __future__ import annotations

import logging
import operator
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import attrs
import trio

from .backoff import Backoff
from .errors import BadMessage, SinkUnavailable
from .hub import HubItem
from .metrics import Histogram
from .models import GapEvent, Journal, Record, Rejected, StoredRecord, no_journal
from .spool.codec import encode_records
from .spool.spool import Spool, SpoolFull
from .storage import Database, partitions
from .storage.cluster import write_fenced
from .storage.records import ID_TURN, TABLES, IdTurn, insert_records

logger = logging.getLogger(__name__)
_TIMESTAMP = operator.attrgetter("timestamp")


@attrs.define(eq=False)
class WriteTicket:
    """Records whose sender waits for their commit (``POST /api/websocket/save``).

    When ``done`` is set, ``ids[i]`` is the database id of ``records[i]``, or ``None`` if it
    was already stored (duplicate) or refused (its reason in ``rejected``).
    """

    records: list[Record]
    done: trio.Event = attrs.field(factory=trio.Event)
    ids: list[int | None] = attrs.field(init=False)
    rejected: dict[int, str] = attrs.field(factory=dict)
    _end: int = 0

    def __attrs_post_init__(self) -> None:
        self.ids = [None] * len(self.records)


WriterInput = list[Record] | WriteTicket


@attrs.frozen
class WriterStatistics:
    batches: int
    rows_committed: int
    duplicates_skipped: int
    rows_rejected: int
    retries: int
    pending: int
    sink_available: bool
    last_error: str | None
    last_flush_seconds: float
    committed_by_connector: dict[str, int]
    rejected_by_connector: dict[str, int]
    rows_fenced: int = 0
    spooling: bool = False
    rows_spooled: int = 0
    rows_spool_lost: int = 0


def _runs_and_saves(records: Sequence[Record]) -> tuple[list[Record], list[Record]]:
    """Connector records (they carry their run's session, and may be spooled) and saves."""
    runs: list[Record] = []
    saves: list[Record] = []
    for r in records:
        (saves if r.session_id is None else runs).append(r)
    return runs, saves


class Fence(Protocol):
    """What the writer needs of the cluster (``engine.cluster``): this instance's id, the
    lease epoch of each connector it runs, and whether other instances want to hear of
    commits. Without one (a writer used alone) nothing is fenced or announced."""

    instance_id: str

    def epochs_for(self, connector_ids: set[str]) -> dict[str, int]: ...

    @property
    def announce(self) -> bool: ...


@attrs.define(eq=False)
class BatchWriter:
    db: Database
    receive_channel: trio.MemoryReceiveChannel[WriterInput]
    send_channel: trio.MemorySendChannel[HubItem]
    batch_size: int = 5000
    journal: Journal = no_journal
    max_age: float = 0.05
    concurrency: int = 2
    batches: int = 0
    rows_committed: int = 0
    duplicates_skipped: int = 0
    rows_rejected: int = 0
    retries: int = 0
    sink_available: bool = True
    last_error: str | None = None
    last_flush_seconds: float = 0.0
    #: Set by the cluster: writes of connector records check their lease epoch in the
    #: write transaction, and commits are announced to the other instances.
    fence: Fence | None = None
    rows_fenced: int = 0
    #: Set by the engine: where connector records go while PostgreSQL cannot take them.
    #: While ``spooling`` every connector record goes there (so order is kept) and the
    #: replayer (``engine.spool``) writes them back; saves are never spooled (their 201
    #: promises a commit).
    spool: Spool | None = None
    spool_lock: trio.Lock = attrs.field(factory=trio.Lock)
    spooling: bool = False
    rows_spooled: int = 0
    rows_spool_lost: int = 0
    spool_refusals: int = 0  # batches the full spool could not take
    # An overflow in progress, per connector: (first lost, last lost, count). One gap
    # record for the whole stretch, written when the spool takes records again.
    _overflow: dict[str, tuple[datetime, datetime, int]] = attrs.field(factory=dict)
    _fenced: Counter[str] = attrs.field(factory=Counter)
    _pending: list[Record] = attrs.field(factory=list)
    _committed: Counter[str] = attrs.field(factory=Counter)
    _rejected: Counter[str] = attrs.field(factory=Counter)
    _duplicates: Counter[str] = attrs.field(factory=Counter)
    _tickets: list[WriteTicket] = attrs.field(factory=list)
    _taken: int = 0  # records ever taken in; with _flushed, says which tickets are done
    _flushed: int = 0
    _in_flight: int = 0  # records at the front of _pending handed to a running flush
    _writing: int = 0  # flushes running
    _linger: trio.CancelScope | None = None  # set while gathering records behind a write
    flush_seconds: Histogram = attrs.field(
        factory=lambda: Histogram((0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0))
    )
    batch_sizes: Histogram = attrs.field(
        factory=lambda: Histogram((1, 10, 100, 500, 1000, 2000, 5000, 10000))
    )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        # Records taken but not yet published stay in _pending; after a crash and restart
        # they are all written again (deduplication makes that safe).
        self._in_flight = self._writing = 0
        slots = trio.Semaphore(self.concurrency)
        previous: trio.Event | None = None
        turn: IdTurn | None = None
        async with trio.open_nursery() as nursery:
            open_ = True
            while open_ or self._in_flight < len(self._pending):
                await slots.acquire()
                if open_:
                    open_ = await self._collect()
                chunk = self._pending[self._in_flight : self._in_flight + self.batch_size]
                if not chunk:
                    slots.release()
                    continue
                self._in_flight += len(chunk)
                self._writing += 1
                if not self.spooling:
                    await self._ensure_days(chunk)
                done = trio.Event()
                turn = IdTurn(turn.taken if turn is not None else None)
                nursery.start_soon(self._flush, chunk, previous, done, slots, turn)
                previous = done
        self.send_channel.close()
        for ticket in self._tickets:  # only reachable if the input ended mid-batch
            ticket.done.set()

    async def _collect(self) -> bool:
        """Take records for the next batch; returns False once the input has ended.

        Group commit: when no write is running, whatever has arrived is written at once,
        so a quiet feed is stored (and broadcast) within one write's time. While a write
        runs, records gather until a batch is full, the oldest has waited ``max_age``, or
        the write finishes — so batches grow with the load, and throughput with them.
        """
        receive = self.receive_channel
        if len(self._pending) == self._in_flight:
            try:
                self._take(await receive.receive())
            except trio.EndOfChannel:
                return False
        deadline = trio.current_time() + self.max_age
        while len(self._pending) - self._in_flight < self.batch_size:
            try:
                self._take(receive.receive_nowait())
                continue
            except trio.WouldBlock:
                pass
            except trio.EndOfChannel:
                return False
            if not self._writing:
                break
            with trio.move_on_at(deadline) as self._linger:
                try:
                    self._take(await receive.receive())
                except trio.EndOfChannel:
                    return False
                finally:
                    self._linger = None
                continue
            break
        return True

    async def _ensure_days(self, chunk: list[Record]) -> None:
        """Before a batch is handed to a write, its days' partitions exist: created here,
        in batch order, so record ids keep following commit order (see
        :meth:`Database.ensure_days`). Cheap when they are known: the batch's oldest and
        newest times, two lookups. Left to the write itself if the database is down."""
        known = self.db.partition_days
        times = list(map(_TIMESTAMP, chunk))  # C-level passes: ~0.05 µs per record in all
        first, last = partitions.day_of(min(times)), partitions.day_of(max(times))
        if first == last and all(first in days for days in known.values()):
            return
        for source, table in TABLES.items():
            days = {partitions.day_of(r.timestamp) for r in chunk if r.source == source}
            try:
                await self.db.ensure_days(table, days)
            except SinkUnavailable:
                return

    def _take(self, item: WriterInput) -> None:
        if isinstance(item, WriteTicket):
            self._pending.extend(item.records)
            self._taken += len(item.records)
            item._end = self._taken
            self._tickets.append(item)
        else:
            self._pending.extend(item)
            self._taken += len(item)

    async def _flush(
        self,
        chunk: list[Record],
        previous: trio.Event | None,
        done: trio.Event,
        slots: trio.Semaphore,
        turn: IdTurn,
    ) -> None:
        """Write one batch, then publish it once the batch before it is published.

        Up to ``concurrency`` batches are written at once, each in its own transaction, so
        formatting one overlaps PostgreSQL's work on another; publishing stays in order,
        and so do record ids (``turn``, see :class:`IdTurn`).
        """
        ID_TURN.set(turn)  # this task's context, inherited by its worker threads
        try:
            by_source: dict[str, list[Record]] = {}
            for record in chunk:
                by_source.setdefault(record.source, []).append(record)
            turn.remaining = len(by_source)
            written = [await self._write(records) for records in by_source.values()]
            if previous is not None:
                await previous.wait()
            for stored in written:
                if self._tickets:
                    self._note_ids(stored)
                if stored:
                    await self.send_channel.send(stored)
            del self._pending[: len(chunk)]
            self._in_flight -= len(chunk)
            self._flushed += len(chunk)
            while self._tickets and self._tickets[0]._end <= self._flushed:
                self._tickets.pop(0).done.set()
        finally:
            turn.end()
            self._writing -= 1
            if not self._writing and self._linger is not None:
                self._linger.cancel()  # the writer is idle: write what has gathered
            done.set()
            slots.release()

    def _note_ids(self, stored: list[StoredRecord]) -> None:
        ids = {id(item.record): item.id for item in stored}
        for ticket in self._tickets:
            for i, record in enumerate(ticket.records):
                if id(record) in ids:
                    ticket.ids[i] = ids[id(record)]

    async def _write(self, records: Sequence[Record]) -> list[StoredRecord]:
        if self.spool is None or not self.spooling:
            return await self._write_db(records, spool_on_outage=self.spool is not None)
        runs, saves = _runs_and_saves(records)
        if runs:
            await self._to_spool(runs)
        return await self._write_db(saves) if saves else []

    async def write_replayed(self, records: Sequence[Record]) -> list[StoredRecord]:
        """Write records back from the spool (retrying while the database is down); the
        replayer publishes what this returns."""
        return await self._write_db(records, fenced=False, recover=True)

    async def _to_spool(self, records: Sequence[Record]) -> None:
        spool = self.spool
        assert spool is not None
        async with self.spool_lock:
            if not self.spooling:  # the replayer emptied the spool meanwhile: go direct
                stored = await self._write_db(records, spool_on_outage=True)
                if stored:
                    await self.send_channel.send(stored)
                return
            try:
                await trio.to_thread.run_sync(spool.append, encode_records(list(records)))
            except SpoolFull as exc:
                self._spool_lost(records, exc)
                return
        self.rows_spooled += len(records)
        self.end_overflow()

    def _spool_lost(self, records: Sequence[Record], exc: Exception) -> None:
        if not self._overflow:
            logger.error("writer: the spool is full, records are lost (a gap): %s", exc)
        self.rows_spool_lost += len(records)
        self.spool_refusals += 1
        for r in records:
            cid = r.connector_id or ""
            first, last, count = self._overflow.get(cid, (r.received_at, r.received_at, 0))
            self._overflow[cid] = (min(first, r.received_at), max(last, r.received_at), count + 1)

    def end_overflow(self) -> None:
        """Record each connector's stretch of records the full spool could not take."""
        for cid, (first, last, count) in self._overflow.items():
            self.journal(GapEvent(cid, first, last, "spool_overflow", count))
            logger.warning("writer: connector %s lost %d records to the full spool", cid, count)
        self._overflow.clear()

    async def _write_db(
        self,
        records: Sequence[Record],
        *,
        spool_on_outage: bool = False,
        fenced: bool = True,
        recover: bool = False,
    ) -> list[StoredRecord]:
        backoff = Backoff(base=0.1, cap=5.0)
        # After a failed attempt its outcome is unknown (the connection may have broken
        # after COMMIT was sent): the retry finds what that attempt stored and publishes it.
        while True:
            started = trio.current_time()
            try:
                if self.fence is None:
                    stored, duplicates = await self.db.sink(
                        insert_records, records, recover=recover
                    )
                else:
                    stored, duplicates = await self._write_fenced(
                        records, self.fence, recover, fenced
                    )
            except SinkUnavailable as exc:
                recover = True
                self.retries += 1
                self.last_error = str(exc)
                if spool_on_outage and self.spool is not None:
                    if not self.spooling:
                        logger.error("writer: %s; spooling to disk until it is back", exc)
                    self.sink_available = False
                    self.spooling = True
                    # Connector records wait on disk; saves keep retrying (their 201
                    # promises a commit).
                    runs, saves = _runs_and_saves(records)
                    if runs:
                        await self._to_spool(runs)
                    if not saves:
                        return []
                    records, spool_on_outage = saves, False
                if self.sink_available:
                    logger.error("writer: %s; holding %d records and retrying", exc, len(records))
                self.sink_available = False
                await trio.sleep(backoff.next_delay())
                continue
            except BadMessage as exc:
                if len(records) == 1:
                    self._reject(records[0], exc)
                    return []
                return await self._isolate(records)
            if not self.sink_available:
                logger.info("writer: database available again")
            self.sink_available = True
            self.last_flush_seconds = trio.current_time() - started
            self.flush_seconds.observe(self.last_flush_seconds)
            self.batch_sizes.observe(len(records))
            self._count(records, stored, duplicates)
            return stored

    async def _write_fenced(
        self, records: Sequence[Record], fence: Fence, recover: bool, fenced: bool = True
    ) -> tuple[list[StoredRecord], int]:
        """Write through the cluster: fenced by lease epochs (unless ``fenced`` is False:
        records written back from the spool, whose run may be over), and announced to the
        other instances' subscribers."""
        # Connector records carry their run's session id; saves have none and are never
        # fenced. The epochs are read here, on the Trio thread, before the hop.
        runs = (
            {r.connector_id for r in records if r.session_id is not None and r.connector_id}
            if fenced
            else set()
        )
        epochs = fence.epochs_for(runs)
        stored, duplicates, dropped = await self.db.sink(
            write_fenced, records, fence.instance_id, epochs, runs, fence.announce, recover
        )
        if dropped:
            for cid, n in dropped.items():
                if not self._fenced[cid]:
                    logger.warning(
                        "writer: dropped %d records of connector %s: this instance no longer"
                        " holds its lease (another instance reads it now)",
                        n,
                        cid,
                    )
                self._fenced[cid] += n
                self.rows_fenced += n
        return stored, duplicates

    def fenced_for(self, connector_id: str) -> int:
        return self._fenced[connector_id]

    def _reject(self, record: Record, exc: BadMessage) -> None:
        for ticket in self._tickets:
            for i, candidate in enumerate(ticket.records):
                if candidate is record:
                    ticket.rejected[i] = exc.detail
        self.rows_rejected += 1
        self._rejected[record.connector_id or ""] += 1
        logger.warning(
            "writer: database refused a record from connector %s (%s)", record.connector_id, exc
        )
        self.journal(
            Rejected(
                record.connector_id, record.received_at, "db_rejected", exc.detail, record.data
            )
        )

    async def _isolate(self, records: Sequence[Record]) -> list[StoredRecord]:
        """Split a refused batch until each bad record stands alone; store the rest."""
        middle = len(records) // 2
        first = await self._write(records[:middle])
        second = await self._write(records[middle:])
        return first + second

    def _count(
        self, records: Sequence[Record], stored: list[StoredRecord], duplicates: int
    ) -> None:
        self.batches += 1
        self.rows_committed += len(stored)
        self.duplicates_skipped += duplicates
        committed = self._committed
        for item in stored:
            committed[item.record.connector_id or ""] += 1
        if duplicates:
            # Rare (replays, retries): find whose records were skipped.
            seen = Counter(r.connector_id or "" for r in records)
            seen.subtract(Counter(s.record.connector_id or "" for s in stored))
            self._duplicates.update(+seen)

    def committed_for(self, connector_id: str) -> int:
        return self._committed[connector_id]

    def rejected_for(self, connector_id: str) -> int:
        return self._rejected[connector_id]

    def duplicates_for(self, connector_id: str) -> int:
        return self._duplicates[connector_id]

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            batches=self.batches,
            rows_committed=self.rows_committed,
            duplicates_skipped=self.duplicates_skipped,
            rows_rejected=self.rows_rejected,
            retries=self.retries,
            pending=len(self._pending),
            sink_available=self.sink_available,
            last_error=self.last_error,
            last_flush_seconds=self.last_flush_seconds,
            committed_by_connector=dict(self._committed),
            rejected_by_connector=dict(self._rejected),
            rows_fenced=self.rows_fenced,
            spooling=self.spooling,
            rows_spooled=self.rows_spooled,
            rows_spool_lost=self.rows_spool_lost,
        )
