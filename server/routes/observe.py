"""Looking inside a running Sluice: health for orchestrators, Prometheus metrics, and the
Trio task tree and actor statistics for debugging."""

from __future__ import annotations

import os
import resource

import trio
from quart import Blueprint, Response

from engine.errors import SluiceError
from engine.instrument import task_tree
from engine.metrics import Exposition
from engine.storage import migrations, queries

from .. import write_deadline
from ..context import engine
from ..responses import json_response

bp = Blueprint("observe", __name__)

READY_TIMEOUT = 3.0


@bp.get("/healthz")
async def healthz() -> Response:
    """The process is up and answering."""
    return json_response({"status": "ok"})


@bp.get("/readyz")
async def readyz() -> Response:
    """Ready for traffic: database reachable, migrations applied, writer not stalled."""
    problems: list[str] = []
    eng = engine()
    if not eng.accepting:
        problems.append("engine is starting or stopping")
    else:
        with trio.move_on_after(READY_TIMEOUT) as scope:
            try:
                version = await eng.db.run(migrations.applied_version)
                await eng.db.run(queries.server_info)
                if version < migrations.latest_version():
                    problems.append(f"schema at {version}, expected {migrations.latest_version()}")
            except SluiceError as exc:
                problems.append(f"database: {exc}")
        if scope.cancelled_caught:
            problems.append(f"database did not answer within {READY_TIMEOUT:g} s")
        if not eng.writer.sink_available:
            problems.append("writer cannot commit (retrying)")
        coordinator = eng.coordinator
        if coordinator.heartbeat_late:
            # Said before the leases expire, so a balancer moves traffic first.
            problems.append(f"cluster heartbeat late (instance {coordinator.instance_id})")
    status = 503 if problems else 200
    body: dict[str, object] = {
        "status": "ready" if not problems else "not_ready",
        "problems": problems,
    }
    if eng.accepting:
        spool = eng.replayer.statistics()
        body["spool"] = {
            "spooling": spool.spooling,
            "bytes": spool.bytes,
            "oldest_age_seconds": spool.oldest_age_seconds,
            "records_replayed": spool.records_replayed,
            "records_lost": spool.records_lost,
        }
    return json_response(body, status)


@bp.get("/api/debug/tasks")
async def debug_tasks() -> Response:
    """The live Trio task tree, with what each task is waiting on."""
    instrument = engine().instrument
    stats = None
    if instrument is not None:
        stats = {
            "busy_seconds": instrument.busy_seconds,
            "idle_seconds": instrument.idle_seconds,
            "slow_steps": instrument.slow_steps,
            "tasks_spawned": instrument.tasks_spawned,
            "tasks_exited": instrument.tasks_exited,
        }
    return json_response({"tree": task_tree(), "loop": stats})


@bp.get("/api/debug/actors")
async def debug_actors() -> Response:
    """Every actor's statistics and the pipeline channels' use: where backpressure is."""
    return json_response(engine().actor_statistics())


@bp.get("/metrics")
async def metrics() -> Response:
    """Prometheus text exposition format, version 0.0.4."""
    eng = engine()
    out = Exposition(base={"instance": eng.instance_id})
    spool = eng.replayer.statistics()
    for name, kind, help_text, amount in (
        ("sluice_spool_bytes", "gauge", "bytes in the disk spool", spool.bytes),
        ("sluice_spool_segments", "gauge", "segment files in the spool", spool.segments),
        (
            "sluice_spool_oldest_age_seconds",
            "gauge",
            "age of the oldest spooled entry (0 when empty)",
            spool.oldest_age_seconds or 0.0,
        ),
        ("sluice_spool_spooling", "gauge", "1 while writes go to the spool", int(spool.spooling)),
        ("sluice_spool_records_total", "counter", "records spooled", spool.records_spooled),
        ("sluice_spool_replayed_total", "counter", "records replayed", spool.records_replayed),
        ("sluice_spool_lost_total", "counter", "records lost: spool full", spool.records_lost),
        ("sluice_spool_torn_total", "counter", "torn entries skipped", spool.torn_entries),
        ("sluice_spool_corrupt_total", "counter", "corrupt entries skipped", spool.corrupt_entries),
    ):
        out.family(name, kind, help_text.capitalize() + ".", [(None, amount)])
    manager = eng.manager
    rows = []
    for i, cid in enumerate(manager.known()):
        rows.append((cid, manager.status(cid)))
        if i % 100 == 99:  # a thousand connectors took ~25 ms: let the pollers run between
            await trio.lowlevel.checkpoint()
    per = [
        ("sluice_connector_messages_received_total", "messages received", "messages_received"),
        ("sluice_connector_records_committed_total", "records committed", "records_stored"),
        ("sluice_connector_messages_rejected_total", "messages rejected", "messages_rejected"),
        ("sluice_connector_messages_gap_total", "messages lost to buffer overflow", "messages_gap"),
        ("sluice_connector_reconnects_total", "reconnects", "reconnects"),
        ("sluice_connector_errors_total", "errors", "errors"),
        ("sluice_connector_requests_total", "REST requests sent", "requests"),
        ("sluice_connector_skipped_ticks_total", "REST ticks skipped", "skipped_ticks"),
    ]
    for name, help_text, field in per:
        out.family(
            name,
            "counter",
            f"Per connector, since its last start: {help_text}.",
            (({"connector_id": cid}, getattr(st, field)) for cid, st in rows),
        )
    out.family(
        "sluice_connector_running",
        "gauge",
        "1 if the connector is running.",
        (
            ({"connector_id": cid}, 1 if st.status in ("running", "connecting") else 0)
            for cid, st in rows
        ),
    )
    latency = []
    for i, cid in enumerate(manager.known()):
        if i % 100 == 99:
            await trio.lowlevel.checkpoint()
        entry = manager.actor_statistics(cid)
        value = getattr(entry, "last_response_ms", None) if entry is not None else None
        if value is not None:
            latency.append(({"connector_id": cid}, value / 1000))
    out.family(
        "sluice_connector_last_response_seconds",
        "gauge",
        "REST: time taken by the last response.",
        latency,
    )
    out.histogram(
        "sluice_rest_tick_lateness_seconds",
        "REST pollers: how late each tick started against its schedule.",
        manager.tick_lateness,
    )
    writer = eng.writer
    ws = writer.statistics()
    out.family("sluice_writer_batches_total", "counter", "Batches committed.", [(None, ws.batches)])
    out.family(
        "sluice_writer_rows_total", "counter", "Rows committed.", [(None, ws.rows_committed)]
    )
    out.family(
        "sluice_writer_duplicates_total",
        "counter",
        "Rows skipped as already stored.",
        [(None, ws.duplicates_skipped)],
    )
    out.family(
        "sluice_writer_rejected_total",
        "counter",
        "Rows the database refused.",
        [(None, ws.rows_rejected)],
    )
    out.family(
        "sluice_writer_retries_total",
        "counter",
        "Batch retries while the database was unavailable.",
        [(None, ws.retries)],
    )
    out.family(
        "sluice_writer_pending_records",
        "gauge",
        "Records held by the writer.",
        [(None, ws.pending)],
    )
    out.family(
        "sluice_writer_sink_available",
        "gauge",
        "1 when the last write succeeded.",
        [(None, 1 if ws.sink_available else 0)],
    )
    out.histogram(
        "sluice_writer_flush_seconds", "Time to write and commit one batch.", writer.flush_seconds
    )
    out.histogram(
        "sluice_writer_batch_size_records", "Records per committed batch.", writer.batch_sizes
    )
    hs = eng.hub.statistics()
    out.family(
        "sluice_hub_subscribers",
        "gauge",
        "Realtime subscribers connected.",
        [(None, hs.subscribers)],
    )
    out.family(
        "sluice_hub_lagged_disconnects_total",
        "counter",
        "Subscribers dropped for lagging.",
        [(None, hs.lagged_disconnects)],
    )
    out.family(
        "sluice_hub_queued_records",
        "gauge",
        "Records queued for realtime subscribers (all of them; the most behind: _max).",
        [(None, hs.queued_records)],
    )
    out.family(
        "sluice_hub_queued_records_max",
        "gauge",
        "Records queued for the realtime subscriber furthest behind.",
        [(None, hs.queued_max)],
    )
    out.family(
        "sluice_hub_direct_batches_total",
        "counter",
        "Batch frames the hub wrote to a subscriber's socket itself (the fast road).",
        [(None, hs.direct_batches)],
    )
    out.family(
        "sluice_http_send_timeouts_total",
        "counter",
        "Connections closed because a client took no data for SLUICE_SEND_TIMEOUT.",
        [(None, write_deadline.stalled["count"])],
    )
    out.family(
        "sluice_hub_frames_encoded_total",
        "counter",
        "Record frames serialized (once each).",
        [(None, hs.frames_encoded)],
    )
    out.family(
        "sluice_hub_records_total",
        "counter",
        "Committed records seen by the hub.",
        [(None, hs.records_in)],
    )
    out.histogram(
        "sluice_hub_fanout_seconds",
        "Time to serialize a committed batch once and queue it for every subscriber.",
        eng.hub.fanout_seconds,
    )
    js = eng.journal.statistics()
    out.family(
        "sluice_journal_dropped_total",
        "counter",
        "Gap/error/dead-letter entries dropped (queue full).",
        [(None, js.dropped)],
    )
    instrument = eng.instrument
    if instrument is not None:
        out.histogram(
            "sluice_loop_lag_seconds",
            "How late a task sleeping 10 ms wakes up (event-loop lag).",
            instrument.loop_lag,
        )
        out.histogram(
            "sluice_gc_pause_seconds",
            "Garbage-collector pauses (every task waits for them).",
            instrument.gc_pauses,
        )
        out.family(
            "sluice_loop_busy_seconds_total",
            "counter",
            "Time spent in task steps.",
            [(None, instrument.busy_seconds)],
        )
        out.family(
            "sluice_loop_idle_seconds_total",
            "counter",
            "Time spent waiting for I/O.",
            [(None, instrument.idle_seconds)],
        )
        out.family(
            "sluice_loop_slow_steps_total",
            "counter",
            "Task steps longer than the slow-step threshold.",
            [(None, instrument.slow_steps)],
        )
    out.family(
        "process_resident_memory_bytes", "gauge", "Resident set size.", [(None, _rss_bytes())]
    )
    out.family("process_open_fds", "gauge", "Open file descriptors.", [(None, _open_fds())])
    return Response(out.text(), content_type="text/plain; version=0.0.4; charset=utf-8")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0
