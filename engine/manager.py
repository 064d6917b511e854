"""The ConnectorManager actor: starts and stops connector actors and keeps their status.

Each running connector is a :class:`~engine.ws_connector.WebSocketConnector` under its own
:class:`~engine.supervisor.Supervisor` (``escalate=False``), in the manager's nursery, with
its own clone of the raw channel's send end. A connector's crash never reaches another.

Status is composed from three owners — the connector (received, reconnects, errors), the
processor (rejected, control) and the writer (stored) — counted since the connector's last
start, and persisted to ``connector_status`` every ``persist_interval`` seconds and on
every start and stop. The wanted state (``running``/``stopped``) is stored with the
connector, so connectors that were running resume after a restart, even after a crash.

Resource handling: the manager owns the raw channel's send end. :meth:`shutdown` stops
every connector (each forwards what it buffered), persists the final statuses and closes
the send end, which lets the processor and the writer drain.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Protocol

import attrs
import httpx
import trio

from .auth import Credentials
from .crypto import Keyring, SecretError, is_encrypted
from .egress import EgressPolicy
from .errors import NotFound, SinkUnavailable
from .http_client import HttpClient, HttpxClient, PollingClient
from .metrics import Histogram
from .models import (
    ConnectorSpec,
    ConnectorStatus,
    ErrorEvent,
    Journal,
    SourceBatch,
    no_journal,
)
from .processor import Processor
from .rest_poller import TICK_LATENESS_BUCKETS, RestPoller
from .storage import Database
from .storage import connectors as sql
from .supervisor import Supervisor
from .transport import SansIOTransport, Transport, open_stream
from .writer import BatchWriter
from .ws_connector import WebSocketConnector

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0


class Coordinated(Protocol):
    """What the manager needs of the cluster coordinator (``engine.cluster``)."""

    async def reconcile(self) -> None: ...

    async def claim(self, connector_id: str) -> bool: ...

    async def announce_control(self, op: str, connector_id: str) -> None: ...

    def owns(self, connector_id: str) -> bool: ...


class Actor(Protocol):
    """What the manager needs of a connector actor (WebSocket or REST)."""

    def request_stop(self) -> None: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...

    def statistics(self) -> Any: ...


@attrs.define(eq=False)
class _Running:
    actor: Actor
    supervisor: Supervisor
    scope: trio.CancelScope
    done: trio.Event
    base_records: int
    base_rejected: int
    base_frames: int
    base_control: int
    base_produced: int
    base_duplicates: int
    base_db_rejected: int
    base_fenced: int
    base_categories: Counter[str]


@attrs.define(eq=False)
class ConnectorManager:
    db: Database
    send_channel: trio.MemorySendChannel[SourceBatch]
    processor: Processor
    writer: BatchWriter
    transport: Transport
    max_message_bytes: int = 4 * 1024 * 1024
    buffer_limit_bytes: int = 64 * 1024 * 1024
    journal: Journal = no_journal
    keyring: Keyring | None = None
    http: httpx.AsyncClient | None = None  # set: REST pollers share it instead of PollingClient
    egress: EgressPolicy | None = None
    persist_interval: float = 2.0
    #: This process's id in the cluster; named in every status it persists.
    instance_id: str | None = None
    #: Set by the cluster coordinator, which then decides what runs here (leases): the
    #: manager no longer resumes connectors itself, and start/stop/restart go through it.
    coordinator: Coordinated | None = None
    tick_lateness: Histogram = attrs.field(factory=lambda: Histogram(TICK_LATENESS_BUCKETS))
    _nursery: trio.Nursery | None = None
    _running: dict[str, _Running] = attrs.field(factory=dict)
    _last: dict[str, _Running] = attrs.field(factory=dict)
    _failed: dict[str, str] = attrs.field(factory=dict)
    _stopping: trio.Event = attrs.field(factory=trio.Event)
    _lock: trio.Lock = attrs.field(factory=trio.Lock)

    def __attrs_post_init__(self) -> None:
        self.processor.on_exchange_error = self._exchange_error

    def _exchange_error(self, connector_id: str, detail: str) -> None:
        """An error event from a WebSocket source that has not produced one record in
        this run answers its subscription: the subscription is refused, and reconnecting
        at full speed would only be refused again."""
        entry = self._running.get(connector_id)
        if entry is None or not isinstance(entry.actor, WebSocketConnector):
            return
        if self.processor.counters_for(connector_id).records == entry.base_produced:
            entry.actor.refuse(detail)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.coordinator is None:
                for spec in await self.db.run(sql.list_connectors):
                    if spec.desired_state == "running":
                        logger.info("resuming connector %s (%s)", spec.connector_id, spec.name)
                        await self._spawn(spec)
            nursery.start_soon(self._persist_loop)
            task_status.started()
            await self._stopping.wait()
            async with self._lock:
                for connector_id in list(self._running):
                    await self._halt(connector_id)
            await self._persist(final=True)
            nursery.cancel_scope.cancel()
        self.send_channel.close()

    def shutdown(self) -> None:
        """Begin the clean stop: connectors stop, flush, and the raw channel closes."""
        self._stopping.set()

    async def start(self, connector_id: str) -> ConnectorStatus | None:
        """Start a connector (idempotent) and remember that it should run. In a cluster
        the instance with room for it takes its lease: this one if it can, else another
        within a second; ``None`` then says it runs elsewhere."""
        if self.coordinator is not None:
            if not await self.db.run(sql.set_desired_state, connector_id, "running"):
                raise NotFound(f"connector {connector_id} not found")
            if await self.coordinator.claim(connector_id):
                return self.status(connector_id)  # start_local persisted it
            await self.coordinator.reconcile()
            await self.coordinator.announce_control("start", connector_id)
            if not self.coordinator.owns(connector_id):
                return None
            await self._persist_one(connector_id)
            return self.status(connector_id)
        async with self._lock:
            spec = await self.db.run(sql.get_connector, connector_id)
            if spec is None:
                raise NotFound(f"connector {connector_id} not found")
            await self.db.run(sql.set_desired_state, connector_id, "running")
            if connector_id not in self._running:
                await self._spawn(spec)
        await self._persist_one(connector_id)
        return self.status(connector_id)

    async def stop(self, connector_id: str) -> ConnectorStatus | None:
        """Stop a connector (idempotent) and remember that it should not run; in a cluster
        its owner stops it within a second (``None``: it ran elsewhere)."""
        async with self._lock:
            if not await self.db.run(sql.set_desired_state, connector_id, "stopped"):
                raise NotFound(f"connector {connector_id} not found")
            if connector_id in self._running:
                await self._halt(connector_id)
        await self._persist_one(connector_id)
        if self.coordinator is not None:
            await self.coordinator.reconcile()  # releases the lease if it was ours
            await self.coordinator.announce_control("stop", connector_id)
        if connector_id not in self.known():
            return None
        return self.status(connector_id)

    async def start_local(self, spec: ConnectorSpec) -> None:
        """Run ``spec`` here (the coordinator holds its lease); idempotent."""
        async with self._lock:
            if spec.connector_id not in self._running:
                await self._spawn(spec)
        await self._persist_one(spec.connector_id)

    async def stop_local(self, connector_id: str, *, drain: bool = True) -> None:
        """Stop running ``connector_id`` here (its lease is lost or handed on). With
        ``drain`` what it read is committed first; then this instance forgets it, so its
        status and counters come from the new owner."""
        async with self._lock:
            if connector_id in self._running:
                await self._halt(connector_id)
        if drain:
            with trio.move_on_after(STOP_TIMEOUT):
                while (left := self.accounting(connector_id)) and (  # noqa: ASYNC110
                    left["messages_in_flight"] or left["records_pending"]
                ):
                    await trio.sleep(0.02)
            await self._persist_one(connector_id)
        self.forget(connector_id)

    async def restart(self, connector_id: str) -> None:
        """Replace a running connector with its stored definition: the old actor stops
        (and flushes) before the new one starts. In a cluster, its owner does it."""
        if self.coordinator is not None and not self.coordinator.owns(connector_id):
            await self.coordinator.announce_control("restart", connector_id)
            return
        async with self._lock:
            spec = await self.db.run(sql.get_connector, connector_id)
            if spec is None:
                raise NotFound(f"connector {connector_id} not found")
            if connector_id in self._running:
                await self._halt(connector_id)
            await self._spawn(spec)

    async def remove(self, connector_id: str) -> None:
        """Stop a connector (if running), let what it already received reach the database,
        and forget it, before its row (and maybe its data) is deleted."""
        if self.coordinator is not None:
            await self.coordinator.announce_control("delete", connector_id)
        async with self._lock:
            if connector_id in self._running:
                await self._halt(connector_id)
            with trio.move_on_after(STOP_TIMEOUT):
                # Three actors own these counts; no single event says "drained".
                while (left := self.accounting(connector_id)) and (  # noqa: ASYNC110
                    left["messages_in_flight"] or left["records_pending"]
                ):
                    await trio.sleep(0.02)
            self.forget(connector_id)

    def is_running(self, connector_id: str) -> bool:
        return connector_id in self._running

    async def _spawn(self, spec: ConnectorSpec) -> None:
        assert self._nursery is not None
        if self._stopping.is_set():
            return
        await self._nursery.start(self._run_connector, spec)

    def _build(
        self, spec: ConnectorSpec, send_channel: trio.MemorySendChannel[SourceBatch]
    ) -> Actor:
        """The actor for ``spec``, with its secrets decrypted (SecretError if they are not)."""
        headers = {k: self._reveal(spec, f"header:{k}", v) for k, v in spec.headers.items()}
        params = {k: self._reveal(spec, f"query:{k}", v) for k, v in spec.query_params.items()}
        if spec.protocol == "rest":
            credentials = Credentials(
                **{k: self._reveal(spec, k, v) for k, v in spec.credentials.items()}
            )
            client: HttpClient
            if self.http is not None:
                client = HttpxClient(self.http)
            else:
                opener = self.egress.open_stream if self.egress is not None else open_stream
                client = PollingClient(opener)
            return RestPoller(
                spec,
                send_channel,
                client,
                credentials=credentials,
                headers=headers,
                query_params=params,
                journal=self.journal,
                max_response_bytes=self.max_message_bytes,
                tick_lateness=self.tick_lateness,
            )
        transport = self.transport
        if self.egress is not None and isinstance(transport, SansIOTransport):
            transport = SansIOTransport(opener=self.egress.open_stream)
        return WebSocketConnector(
            spec,
            send_channel,
            transport,
            max_message_bytes=self.max_message_bytes,
            buffer_limit_bytes=self.buffer_limit_bytes,
            journal=self.journal,
            headers=headers,
            query_params=params,
        )

    def _reveal(self, spec: ConnectorSpec, field: str, value: str) -> str:
        if self.keyring is None or not is_encrypted(value):
            return value  # written before encryption existed: rotate-keys seals it
        return self.keyring.decrypt(value, spec.connector_id, field)

    async def _run_connector(
        self, spec: ConnectorSpec, *, task_status: trio.TaskStatus[None]
    ) -> None:
        send_channel = self.send_channel.clone()
        cid = spec.connector_id
        try:
            actor = self._build(spec, send_channel)
        except SecretError as exc:
            send_channel.close()
            reason = f"cannot decrypt credentials: {exc}"
            logger.error("connector %s: %s", cid, reason)
            self._failed[cid] = reason
            self.journal(ErrorEvent(cid, datetime.now(UTC), "secret", reason))
            task_status.started()
            return
        self._failed.pop(cid, None)
        counters = self.processor.counters_for(cid)
        entry = _Running(
            actor=actor,
            supervisor=Supervisor(f"connector {cid}", actor.run),
            scope=trio.CancelScope(),
            done=trio.Event(),
            base_records=self.writer.committed_for(cid),
            base_rejected=counters.rejected,
            base_frames=counters.frames,
            base_control=counters.control,
            base_produced=counters.records,
            base_duplicates=self.writer.duplicates_for(cid),
            base_db_rejected=self.writer.rejected_for(cid),
            base_fenced=self.writer.fenced_for(cid),
            base_categories=Counter(counters.rejected_by_category),
        )
        self._running[cid] = self._last[cid] = entry
        try:
            with send_channel, entry.scope:
                await entry.supervisor.run(task_status=task_status)
        finally:
            self._running.pop(cid, None)
            entry.done.set()

    async def _halt(self, connector_id: str) -> None:
        entry = self._running.get(connector_id)
        if entry is None:
            return
        entry.actor.request_stop()
        with trio.move_on_after(STOP_TIMEOUT):
            await entry.done.wait()
        if not entry.done.is_set():
            logger.error(
                "connector %s did not stop in %g s; cancelling", connector_id, STOP_TIMEOUT
            )
            entry.scope.cancel()
            await entry.done.wait()

    def status(self, connector_id: str) -> ConnectorStatus:
        """The live status of a connector this process has run; raises NotFound otherwise."""
        if connector_id in self._failed:
            return ConnectorStatus(
                connector_id,
                "error",
                last_error=self._failed[connector_id],
                instance_id=self.instance_id,
            )
        entry = self._last.get(connector_id)
        if entry is None:
            raise NotFound(f"connector {connector_id} has not run in this process")
        stats = entry.actor.statistics()
        counters = self.processor.counters_for(connector_id)
        if entry.supervisor.state == "error":
            state, last_error = "error", entry.supervisor.last_error
        else:
            state = stats.status if connector_id in self._running else "stopped"
            last_error = counters.last_error or stats.last_error
        categories = Counter(counters.rejected_by_category)
        categories.subtract(entry.base_categories)
        if stats.binary_messages:
            categories["binary"] += stats.binary_messages
        if stats.oversized_messages:
            categories["oversized"] += stats.oversized_messages
        db_rejected = self.writer.rejected_for(connector_id) - entry.base_db_rejected
        if db_rejected:
            categories["db_rejected"] += db_rejected
        dropped_frames = stats.binary_messages + stats.oversized_messages
        return ConnectorStatus(
            connector_id=connector_id,
            status=state,
            messages_received=stats.messages_received + dropped_frames,
            records_stored=self.writer.committed_for(connector_id) - entry.base_records,
            messages_rejected=counters.rejected - entry.base_rejected + dropped_frames,
            control_messages=counters.control - entry.base_control,
            errors=stats.errors + counters.exchange_errors,
            reconnects=stats.reconnects,
            last_message_at=stats.last_message_at,
            last_error=last_error,
            started_at=stats.started_at,
            messages_gap=stats.gap.count if stats.gap else 0,
            records_duplicate=self.writer.duplicates_for(connector_id) - entry.base_duplicates,
            rejected_by_category={k: v for k, v in sorted(categories.items()) if v},
            requests=getattr(stats, "requests", 0),
            skipped_ticks=getattr(stats, "skipped_ticks", 0),
            last_status_code=getattr(stats, "last_status_code", None),
            instance_id=self.instance_id,
            updated_at=datetime.now(UTC),
        )

    def accounting(self, connector_id: str) -> dict[str, int] | None:
        """Where every message and record of a connector went, since its last start.

        ``messages_received = messages_normalized + control + rejected + gap + in_flight``
        (binary and oversized frames are received and rejected at the socket)
        and ``records_produced = committed + duplicates + rejected + pending``; both
        ``in_flight`` and ``pending`` are zero at a quiet point.
        """
        entry = self._last.get(connector_id)
        if entry is None:
            return None  # never ran in this process (or could not start)
        stats = entry.actor.statistics()
        counters = self.processor.counters_for(connector_id)
        frames = counters.frames - entry.base_frames
        control = counters.control - entry.base_control
        # Binary and oversized frames never reach the processor: rejected at the socket.
        dropped_frames = stats.binary_messages + stats.oversized_messages
        rejected = counters.rejected - entry.base_rejected
        gap = stats.gap.count if stats.gap else 0
        produced = counters.records - entry.base_produced
        committed = self.writer.committed_for(connector_id) - entry.base_records
        duplicates = self.writer.duplicates_for(connector_id) - entry.base_duplicates
        db_rejected = self.writer.rejected_for(connector_id) - entry.base_db_rejected
        fenced = self.writer.fenced_for(connector_id) - entry.base_fenced
        return {
            "messages_received": stats.messages_received + dropped_frames,
            "messages_normalized": frames - control - rejected,
            "messages_control": control,
            "messages_rejected": rejected + dropped_frames,
            "messages_gap": gap,
            "messages_in_flight": stats.messages_received - frames - gap,
            "records_produced": produced,
            "records_committed": committed,
            "records_duplicate": duplicates,
            "records_rejected": db_rejected,
            "records_fenced": fenced,
            "records_pending": produced - committed - duplicates - db_rejected - fenced,
        }

    def actor_statistics(self, connector_id: str) -> Any:
        """The connector actor's own statistics snapshot, or ``None``."""
        entry = self._last.get(connector_id)
        return entry.actor.statistics() if entry is not None else None

    def known(self) -> list[str]:
        return [*self._last, *(c for c in self._failed if c not in self._last)]

    async def _persist_loop(self) -> None:
        next_at = trio.current_time()
        while True:
            next_at += self.persist_interval
            await trio.sleep_until(next_at)
            await self._persist()

    async def _persist(self, final: bool = False) -> None:
        statuses = [self.status(cid) for cid in self.known()]
        if not statuses:
            return
        try:
            with trio.move_on_after(5, shield=final):
                await self.db.run(sql.save_statuses, statuses)
        except SinkUnavailable as exc:
            logger.warning("could not persist connector status: %s", exc)

    async def _persist_one(self, connector_id: str) -> None:
        if connector_id in self.known():
            try:
                await self.db.run(sql.save_statuses, [self.status(connector_id)])
            except SinkUnavailable as exc:
                logger.warning("could not persist connector status: %s", exc)

    def forget(self, connector_id: str) -> None:
        self._last.pop(connector_id, None)
        self._failed.pop(connector_id, None)
