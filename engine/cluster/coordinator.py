"""The coordinator actor: this process's membership in the cluster, the leases of the
connectors it runs, and control from any instance.

Every ``interval`` (1 s) — and at once when a control notification arrives — it
*reconciles*: one heartbeat statement renews the instance and every lease it holds (and
says which instances are live); leases it lost (another instance took them while this one
was frozen or cut off) stop their connectors; then it computes its share of the wanted
connectors (:mod:`.quota`), hands on the excess and takes free leases up to its share.
A lease taken from another instance (dead, frozen, or handing on) is a ``handover`` gap
from that connector's newest stored record to now.

Control: start/stop/update/delete on any instance change the stored definition and send
``NOTIFY sluice_control``; every instance reconciles on it, so the owner acts within a
second, and the periodic reconciliation covers a notification that was lost.

Fencing: the writer asks :meth:`epochs_for` before each write and checks those epochs in
the write transaction (``storage.cluster.write_fenced``), so records of a connector whose
lease moved are never stored by the old owner.

Resource handling: owns its LISTEN connection (``Database.listen``) and its row in
``cluster_instances``; :meth:`leave` (after the engine drained) lets its leases expire.

Error handling: a database error during a reconciliation is logged (rate-limited) and
retried at the next one; connectors keep running meanwhile (their writes are fenced if
the lease moved).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from datetime import UTC, datetime

import attrs
import orjson
import trio

from ..errors import SinkUnavailable
from ..manager import ConnectorManager
from ..models import GapEvent, Journal, no_journal
from ..storage import Database
from ..storage import cluster as sql
from .quota import plan, quota

logger = logging.getLogger(__name__)

VERSION = "0.1.0"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def instance_name() -> str:
    """A new instance id: host, pid and a random suffix (pids repeat across hosts)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


@attrs.frozen
class CoordinatorStatistics:
    instance_id: str
    live_instances: list[str]
    owned: dict[str, int]
    quota: int
    heartbeat_age: float | None
    renewals: int
    acquired: int
    handed_on: int
    lost: int
    reconciliations: int
    errors: int


@attrs.define(eq=False)
class Coordinator:
    db: Database
    manager: ConnectorManager
    instance_id: str = attrs.field(factory=instance_name)
    journal: Journal = no_journal
    interval: float = 1.0
    ttl: float = 5.0
    url: str | None = None
    owned: dict[str, int] = attrs.field(factory=dict)
    live: list[str] = attrs.field(factory=list)
    target: int = 0
    renewals: int = 0
    acquired: int = 0
    handed_on: int = 0
    lost: int = 0
    reconciliations: int = 0
    errors: int = 0
    _last_heartbeat: float | None = None
    _wake: trio.Event = attrs.field(factory=trio.Event)
    _lock: trio.Lock = attrs.field(factory=trio.Lock)
    _leaving: bool = False
    _failing: bool = False

    # --- what the writer needs (engine.writer.Fence) ---

    def epochs_for(self, connector_ids: set[str]) -> dict[str, int]:
        return {c: self.owned[c] for c in connector_ids if c in self.owned}

    @property
    def announce(self) -> bool:
        """Other instances exist, so commits are announced to them (a cluster of one
        pays nothing for NOTIFY)."""
        return len(self.live) > 1

    # --- what the manager needs (engine.manager.Coordinated) ---

    def owns(self, connector_id: str) -> bool:
        return connector_id in self.owned

    async def announce_control(self, op: str, connector_id: str) -> None:
        payload = {"op": op, "c": connector_id, "i": self.instance_id}
        try:
            await self.db.run(sql.notify, sql.CONTROL_CHANNEL, payload)
        except SinkUnavailable as exc:
            logger.warning("cluster: could not announce %s of %s: %s", op, connector_id, exc)

    @property
    def heartbeat_late(self) -> bool:
        """No heartbeat for more than half the lease time: the leases may soon expire."""
        last = self._last_heartbeat
        return last is None or trio.current_time() - last > self.ttl / 2

    # --- the actor ---

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        host = socket.gethostname()
        for dead in await self.db.run(sql.reap_local, host, _alive):
            logger.info("cluster: instance %s on this host is gone; its leases are free", dead)
        await self.db.run(sql.register, self.instance_id, host, os.getpid(), VERSION, self.url)
        logger.info("cluster: instance %s joined", self.instance_id)
        send, receive = trio.open_memory_channel[list[tuple[str, str]]](16)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.db.listen, [sql.CONTROL_CHANNEL], send)
            nursery.start_soon(self._on_control, receive)
            await self.reconcile()
            task_status.started()
            while not self._leaving:
                with trio.move_on_after(self.interval):
                    await self._wake.wait()
                self._wake = trio.Event()
                if not self._leaving:
                    await self.reconcile()
            nursery.cancel_scope.cancel()

    async def _on_control(self, receive: trio.MemoryReceiveChannel[list[tuple[str, str]]]) -> None:
        async for batch in receive:
            for _channel, payload in batch:
                try:
                    message = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue
                if message.get("op") == "restart" and message.get("c") in self.owned:
                    try:
                        await self.manager.restart(message["c"])
                    except Exception:
                        logger.exception("cluster: restart of %s failed", message["c"])
            self._wake.set()

    def stop(self) -> None:
        """Stop reconciling (the engine is draining): no more leases are taken."""
        self._leaving = True
        self._wake.set()

    async def leave(self) -> None:
        """After the drain: let every lease expire now, naming this instance, and leave."""
        with trio.move_on_after(5, shield=True):
            try:
                await self.db.run(sql.deregister, self.instance_id)
            except SinkUnavailable as exc:
                logger.warning("cluster: could not deregister (leases expire anyway): %s", exc)
        logger.info("cluster: instance %s left", self.instance_id)

    async def reconcile(self) -> None:
        """Renew, drop what was lost, hand on the excess, take up to this instance's share."""
        async with self._lock:
            if self._leaving:
                return
            try:
                await self._reconcile()
            except SinkUnavailable as exc:
                self.errors += 1
                if not self._failing:
                    logger.warning("cluster: reconciliation failed, retrying: %s", exc)
                self._failing = True
                return
            if self._failing:
                logger.info("cluster: reconciling again")
            self._failing = False

    async def _reconcile(self) -> None:
        self.reconciliations += 1
        live, held = await self.db.run(sql.heartbeat, self.instance_id, self.ttl)
        self._last_heartbeat = trio.current_time()
        self.live = live
        self.renewals += len(held)
        for cid, epoch in list(self.owned.items()):
            if held.get(cid) != epoch:
                self.lost += 1
                del self.owned[cid]
                logger.warning(
                    "cluster: lost the lease of connector %s (another instance runs it now);"
                    " stopping it here",
                    cid,
                )
                await self.manager.stop_local(cid, drain=False)
        wanted = await self.db.run(sql.wanted)
        self.target = quota(live, self.instance_id, len(wanted))
        candidates = [c for c in wanted if c not in self.owned]
        free = await self.db.run(sql.free_leases, candidates) if candidates else []
        release, acquire = plan(list(self.owned), wanted, free, self.target)
        wanted_set = set(wanted)
        for cid in release:
            epoch = self.owned.pop(cid)
            hand_on = cid in wanted_set
            await self.manager.stop_local(cid, drain=True)
            await self.db.run(sql.release, cid, self.instance_id, epoch, hand_on=hand_on)
            if hand_on:
                self.handed_on += 1
                logger.info("cluster: handed connector %s on (rebalancing)", cid)
        for cid in acquire:
            taken = await self.db.run(sql.claim, cid, self.instance_id, self.ttl)
            if taken is not None:  # else another instance was faster, or it is gone
                await self._took(taken)

    async def claim(self, connector_id: str) -> bool:
        """Take the lease of a connector just asked to start, if this instance has room
        for it: one transaction instead of a whole reconciliation (which renews every
        lease and reads the wanted list: ≈ 10 round trips, 46 ms a start on an idle
        server, 9 s to start 200). ``False``: it is not ours (no room, held elsewhere, or
        the database failed) and the next reconciliation decides, here or elsewhere."""
        async with self._lock:
            if connector_id in self.owned:
                return True
            if self._leaving:
                return False
            held = len(self.owned)
            live, me = list(self.live), self.instance_id
            try:
                taken = await self.db.run(
                    sql.claim, connector_id, me, self.ttl, lambda n: quota(live, me, n) > held
                )
            except SinkUnavailable as exc:
                logger.warning("cluster: could not take the lease of %s: %s", connector_id, exc)
                return False
            if taken is None:
                return False
            await self._took(taken)
            return True

    async def _took(self, taken: sql.Claim) -> None:
        """Run a connector whose lease this instance just took."""
        cid = taken.spec.connector_id
        self.owned[cid] = taken.epoch
        self.acquired += 1
        # Nobody read the source between its last stored record and now: a gap, named
        # for why — stopped and started, its process restarted or crashed, or its
        # instance stopped answering (died elsewhere, froze, was cut off).
        if taken.previous is None:
            cause = "stopped"
        else:
            cause = {"clean": "restart", "crash": "crash"}.get(taken.ended or "", "handover")
            logger.info("cluster: took connector %s over from %s (%s)", cid, taken.previous, cause)
        if taken.since is not None:
            self.journal(GapEvent(cid, taken.since, datetime.now(UTC), cause))
        await self.manager.start_local(taken.spec)

    def statistics(self) -> CoordinatorStatistics:
        age = None if self._last_heartbeat is None else trio.current_time() - self._last_heartbeat
        return CoordinatorStatistics(
            instance_id=self.instance_id,
            live_instances=list(self.live),
            owned=dict(self.owned),
            quota=self.target,
            heartbeat_age=age,
            renewals=self.renewals,
            acquired=self.acquired,
            handed_on=self.handed_on,
            lost=self.lost,
            reconciliations=self.reconciliations,
            errors=self.errors,
        )
