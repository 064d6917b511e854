"""The composition root of the engine: storage, then writer → hub → processor →
connector manager, wired with bounded channels, in one nursery.

Startup order: database ready (migrations applied) → writer → hub → processor → manager
(which resumes the connectors that were running). :meth:`Engine.run` reports
``task_status.started()`` only then.

Shutdown (:meth:`Engine.request_stop`) drains: the manager stops the connectors and
closes the raw channel; the processor, then the writer (after its last commit), then the
hub finish and close their outputs in turn. The whole drain has ``drain_timeout``
seconds; past that everything is cancelled and what was dropped is logged with counts.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import httpx
import trio

from .cluster import Coordinator, Relay, instance_name
from .config import Settings
from .crypto import Keyring, load_keyring
from .egress import EgressPolicy, GuardedTransport
from .errors import BadMessage, SinkUnavailable, Unavailable
from .hub import BroadcastHub, HubItem
from .instrument import EngineInstrument
from .journal import Journal
from .manager import ConnectorManager
from .models import Record, SourceBatch
from .processor import Processor
from .retention import Retention
from .spool import Spool
from .spool.replayer import SpoolReplayer
from .storage import Database
from .storage import cluster as cluster_sql
from .storage import records as records_sql
from .supervisor import Supervisor
from .transport import transport_named
from .writer import BatchWriter, WriterInput, WriteTicket

logger = logging.getLogger(__name__)

# Channel capacities, in batches. Each holds well under a second at peak rate.
RAW_BATCHES = 64
RECORD_BATCHES = 32
STORED_BATCHES = 16

T = TypeVar("T")


class EngineNotReady(Unavailable):
    """The engine is starting or stopping; try again shortly."""


@attrs.define(eq=False)
class Engine:
    """Owns every actor. Use :meth:`run` under a nursery (``await nursery.start(engine.run)``)."""

    settings: Settings
    _db: Database | None = None
    _processor: Processor | None = None
    _writer: BatchWriter | None = None
    _hub: BroadcastHub | None = None
    _manager: ConnectorManager | None = None
    _journal: Journal | None = None
    _coordinator: Coordinator | None = None
    _relay: Relay | None = None
    _replayer: SpoolReplayer | None = None
    #: This process's id in the cluster (host-pid-random), named in status and logs.
    instance_id: str = attrs.field(factory=instance_name)
    _ingest: trio.MemorySendChannel[WriterInput] | None = None
    supervisors: list[Supervisor] = attrs.field(factory=list)
    retention: Retention | None = None
    keyring: Keyring | None = None
    instrument: EngineInstrument | None = None
    channels: dict[str, Any] = attrs.field(factory=dict)
    channel_peaks: dict[str, int] = attrs.field(factory=dict)
    _stop: trio.Event = attrs.field(factory=trio.Event)
    stopped: trio.Event = attrs.field(factory=trio.Event)
    accepting: bool = False

    @property
    def db(self) -> Database:
        return _ready(self._db)

    @property
    def manager(self) -> ConnectorManager:
        return _ready(self._manager)

    @property
    def hub(self) -> BroadcastHub:
        return _ready(self._hub)

    @property
    def writer(self) -> BatchWriter:
        return _ready(self._writer)

    @property
    def processor(self) -> Processor:
        return _ready(self._processor)

    @property
    def journal(self) -> Journal:
        return _ready(self._journal)

    def request_stop(self) -> None:
        self._stop.set()

    async def _probe_lag(self) -> None:
        if self.instrument is not None:
            await self.instrument.probe_lag()

    async def _sample_channels(self) -> None:
        """Remember each pipeline channel's peak use (sampled every 50 ms)."""
        while True:
            for name, channel in self.channels.items():
                used = channel.statistics().current_buffer_used
                if used > self.channel_peaks.get(name, 0):
                    self.channel_peaks[name] = used
            await trio.sleep(0.05)

    def actor_statistics(self) -> dict[str, Any]:
        """Every actor's statistics and every pipeline channel's buffer use and waiters
        (where backpressure is)."""
        channels = {}
        for name, channel in self.channels.items():
            st = channel.statistics()
            channels[name] = {
                "buffer_used": st.current_buffer_used,
                "peak": max(self.channel_peaks.get(name, 0), st.current_buffer_used),
                "capacity": st.max_buffer_size,
                "tasks_waiting_send": st.tasks_waiting_send,
                "tasks_waiting_receive": st.tasks_waiting_receive,
            }
        stats = {
            "supervisors": [attrs.asdict(s.statistics()) for s in self.supervisors],
            "channels": channels,
        }
        if self.instrument is not None:
            stats["loop"] = self.instrument.loop_statistics()
        for name in (
            "writer",
            "processor",
            "hub",
            "journal",
            "coordinator",
            "relay",
            "replayer",
        ):
            actor = getattr(self, "_" + name)
            if actor is not None:
                snapshot = attrs.asdict(actor.statistics())
                snapshot.pop("sources", None)
                stats[name] = snapshot
        return stats

    async def announce_notice(self, kind: str, notice: dict[str, Any]) -> None:
        """Send a notice (``gap``, ``test``) to the other instances' subscribers too."""
        coordinator = self._coordinator
        if coordinator is None or not coordinator.announce:
            return
        payload = {"i": coordinator.instance_id, "t": kind, "n": notice}
        try:
            await self.db.run(cluster_sql.notify, cluster_sql.FEED_CHANNEL, payload)
        except (SinkUnavailable, BadMessage) as exc:
            logger.warning("cluster: could not announce a %s notice: %s", kind, exc)

    async def advertise(self, url: str) -> None:
        """Publish where this instance serves (``GET /api/cluster`` lists it)."""
        if self._coordinator is not None:
            self._coordinator.url = url
            try:
                await self.db.run(cluster_sql.set_url, self._coordinator.instance_id, url)
            except SinkUnavailable as exc:
                logger.warning("cluster: could not publish the listen address: %s", exc)

    @property
    def coordinator(self) -> Coordinator:
        return _ready(self._coordinator)

    @property
    def replayer(self) -> SpoolReplayer:
        return _ready(self._replayer)

    @property
    def relay(self) -> Relay:
        return _ready(self._relay)

    async def save(self, records: list[Record]) -> WriteTicket:
        """Hand records straight to the writer and wait until they are committed.

        Raises :class:`EngineNotReady` while starting or draining, and
        :class:`~engine.errors.SinkUnavailable` if the commit takes longer than
        ``settings.save_timeout``
        (the records may still be committed later).
        """
        ingest = self._ingest
        if ingest is None or not self.accepting:
            raise EngineNotReady("the engine is not accepting writes")
        ticket = WriteTicket(records)
        if not records:
            ticket.done.set()
            return ticket
        timeout = self.settings.save_timeout
        with trio.move_on_after(timeout) as scope:
            await ingest.send(ticket)
            await ticket.done.wait()
        if scope.cancelled_caught:
            raise SinkUnavailable(
                f"not committed within {timeout:g} s; it may still be, retry with the same"
                " idempotency_key"
            )
        return ticket

    async def run(self, *, task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED) -> None:
        s = self.settings
        self.instrument = EngineInstrument(slow_step=s.slow_step, debug=s.trio_debug)
        trio.lowlevel.add_instrument(self.instrument)
        gc.callbacks.append(self.instrument.on_gc)
        try:
            self.keyring = load_keyring(
                s.encryption_key, s.encryption_keys, embedded=s.embedded, data_dir=s.data_dir
            )
            async with contextlib.AsyncExitStack() as stack:
                db = await stack.enter_async_context(Database.open(s))
                http = None
                if s.http_client == "httpx":
                    http = await stack.enter_async_context(
                        httpx.AsyncClient(
                            transport=GuardedTransport(self.egress),
                            timeout=httpx.Timeout(30.0, connect=10.0),
                            follow_redirects=True,
                            max_redirects=5,
                        )
                    )
                self._db = db
                await self._run_actors(db, http, task_status)
        finally:
            self.accepting = False
            trio.lowlevel.remove_instrument(self.instrument)
            gc.callbacks.remove(self.instrument.on_gc)
            self.stopped.set()

    @property
    def secrets(self) -> Keyring:
        return _ready(self.keyring)

    @property
    def egress(self) -> EgressPolicy:
        s = self.settings
        return EgressPolicy.from_settings(s.allow_private_networks, s.egress_allow)

    async def _run_actors(
        self,
        db: Database,
        http: httpx.AsyncClient | None,
        task_status: trio.TaskStatus[Engine],
    ) -> None:
        s = self.settings
        raw_send, raw_recv = trio.open_memory_channel[SourceBatch](RAW_BATCHES)
        rec_send, rec_recv = trio.open_memory_channel[WriterInput](RECORD_BATCHES)
        out_send, out_recv = trio.open_memory_channel[HubItem](STORED_BATCHES)
        journal = self._journal = Journal.create(db, out_send.clone())
        writer = self._writer = BatchWriter(
            db,
            rec_recv,
            out_send,
            batch_size=s.batch_size,
            concurrency=s.write_concurrency,
            max_age=s.batch_max_age,
            journal=journal.record,
        )
        hub = self._hub = BroadcastHub(
            out_recv, max_lag=s.realtime_max_lag, max_subscribers=s.realtime_max_subscribers
        )
        # Everything committed before this process started is in the database only: a
        # resume reads it from there (see ``BroadcastHub.published_id``).
        hub.published_id = await db.run(records_sql.newest_id)
        processor = self._processor = Processor(raw_recv, rec_send, journal=journal.record)
        manager = self._manager = ConnectorManager(
            db,
            raw_send,
            processor,
            writer,
            transport_named(s.ws_transport),
            max_message_bytes=s.max_frame_bytes,
            buffer_limit_bytes=s.connector_buffer_bytes,
            journal=journal.record,
            keyring=self.keyring,
            http=http,
            egress=self.egress,
        )
        coordinator = self._coordinator = Coordinator(
            db,
            manager,
            instance_id=self.instance_id,
            journal=journal.record,
            interval=s.cluster_interval,
            ttl=s.lease_ttl,
        )
        manager.coordinator = coordinator
        manager.instance_id = coordinator.instance_id
        manager.persist_interval = s.cluster_interval
        writer.fence = coordinator
        spool = writer.spool = Spool(
            s.data_dir / "spool", max_bytes=s.spool_max_bytes, fsync=s.spool_fsync
        )
        replayer = self._replayer = SpoolReplayer(
            spool, writer, out_send.clone(), rate=s.spool_replay_rate
        )
        journal.announce = self.announce_notice
        relay = self._relay = Relay(db, out_send.clone(), coordinator.instance_id)
        self._ingest = rec_send.clone()
        self.channels = {"raw": raw_recv, "records": rec_recv, "committed": out_recv}
        self.retention = Retention(db, s.retention_days, interval=s.retention_interval)
        self.supervisors = [
            Supervisor("hub", hub.run, escalate=True),
            Supervisor("journal", journal.run, escalate=True),
            Supervisor("writer", writer.run, escalate=True),
            Supervisor("processor", processor.run, escalate=True),
            Supervisor("retention", self.retention.run),
        ]
        with raw_recv, rec_send, rec_recv, out_send, out_recv, self._ingest:
            # Two levels: the hub and the journal must outlive everything that feeds them.
            async with trio.open_nursery() as outer:
                for supervisor in self.supervisors[:2]:
                    await outer.start(supervisor.run)
                relay_scope = trio.CancelScope()
                await outer.start(_in_scope_started, relay_scope, relay.run)
                replay_scope = trio.CancelScope()
                await outer.start(_in_scope_started, replay_scope, replayer.run)
                async with trio.open_nursery() as inner:
                    for supervisor in self.supervisors[2:4]:
                        await inner.start(supervisor.run)
                    await inner.start(manager.run)
                    await inner.start(coordinator.run)
                    retention_scope = trio.CancelScope()
                    inner.start_soon(_in_scope, retention_scope, self.supervisors[4].run)
                    sampler_scope = trio.CancelScope()
                    inner.start_soon(_in_scope, sampler_scope, self._sample_channels)
                    probe_scope = trio.CancelScope()
                    inner.start_soon(_in_scope, probe_scope, self._probe_lag)
                    self.accepting = True
                    collector_scope = trio.CancelScope()
                    if s.gc_freeze:
                        tune_garbage_collector()
                        inner.start_soon(_in_scope, collector_scope, collect_young)
                    logger.info("engine ready")
                    task_status.started(self)
                    await self._stop.wait()
                    self.accepting = False
                    logger.info("engine stopping: draining (up to %g s)", s.drain_timeout)
                    deadline = trio.current_time() + s.drain_timeout
                    self._ingest.close()
                    retention_scope.cancel()
                    sampler_scope.cancel()
                    probe_scope.cancel()
                    collector_scope.cancel()
                    coordinator.stop()
                    manager.shutdown()
                    inner.cancel_scope.deadline = deadline
                await coordinator.leave()  # after the drain: the next owner starts clean
                relay_scope.cancel()
                replay_scope.cancel()  # what is left in the spool replays on the next start
                journal.close()
                outer.cancel_scope.deadline = deadline
            if inner.cancel_scope.cancelled_caught or outer.cancel_scope.cancelled_caught:
                self._log_dropped(raw_recv, rec_recv)
            else:
                logger.info("engine drained cleanly")

    def _log_dropped(
        self,
        raw_recv: trio.MemoryReceiveChannel[SourceBatch],
        rec_recv: trio.MemoryReceiveChannel[WriterInput],
    ) -> None:
        writer = self.writer
        logger.error(
            "drain deadline passed: dropped %d records held by the writer, %d record batches"
            " and %d frame batches still queued",
            writer.statistics().pending,
            rec_recv.statistics().current_buffer_used,
            raw_recv.statistics().current_buffer_used,
        )


async def _in_scope_started(
    scope: trio.CancelScope,
    run: Callable[..., Awaitable[None]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await run(task_status=task_status)


async def _in_scope(scope: trio.CancelScope, run: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await run()


def tune_garbage_collector() -> None:
    """Move every object alive after start-up out of the garbage collector's sight, and
    collect young objects less often (``SLUICE_GC_FREEZE``).

    Measured under load: each full collection walked the whole server (Quart, hypercorn,
    psycopg, the modules) and paused every task for 35 to 60 ms about once a second, while
    collecting nothing. Frozen objects are still freed by reference counting; only cycles
    among them would stay, and start-up leaves none worth chasing (collected just before).
    """
    gc.collect()
    gc.freeze()
    # Young objects here are records in flight, dead within milliseconds: collect the
    # youngest generation every 50,000 allocations instead of 700, so few of them live
    # long enough to be promoted, and full collections (which walk every connector's
    # objects: 100+ ms with a thousand of them) become rare.
    gc.set_threshold(50_000, 10, 10)


#: Seconds between the young collections of :func:`collect_young`.
YOUNG_COLLECTION_INTERVAL = 1.0


async def collect_young(interval: float = YOUNG_COLLECTION_INTERVAL) -> None:
    """Collect the young generation every ``interval`` s, and the middle one every tenth
    time, whatever the allocation count (with :func:`tune_garbage_collector` on).

    Every HTTP request leaves reference cycles behind (werkzeug's route matcher is a
    closure that refers to itself, and its frame holds the request's objects), about
    20 KB each for a ``/metrics`` scrape. With young collections only every 50,000 net
    allocations, a server whose records are not tracked by the collector reached one every
    few minutes: in soak-30k (a scrape every 0.2 s) RSS climbed 3.5 MiB a minute
    (77 → 106 MiB over five minutes) and Python's tracked objects grew by 750 functions'
    cells every 30 s. A young collection walks only what was allocated since the last one
    and is still alive (a few thousand objects: well under a millisecond)."""
    rounds = 0
    while True:
        await trio.sleep(interval)
        rounds += 1
        gc.collect(1 if rounds % 10 == 0 else 0)


def _ready(value: T | None) -> T:
    if value is None:
        raise EngineNotReady("the engine is not running")
    return value
