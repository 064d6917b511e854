"""The benchmark runner: ceilings and the naive baseline measured in the same run, then
scenarios through a real ``sluice serve`` process, a firehose process and subscriber
processes. Results are ratios against the baselines of this run.

PostgreSQL: ``POSTGRES_DSN``/``POSTGRES_*`` when set (a fresh database is created per
scenario), else an embedded server in a temporary directory. Every process talks over loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import attrs
import httpx
import orjson
import psutil
import psycopg
import trio
from psycopg import sql

from engine.config import Settings
from engine.models import evolve_record
from engine.normalize import Context, decode, normalizer_for
from engine.storage import Database
from engine.storage import cluster as cluster_sql
from engine.storage.records import insert_records
from engine.transport import SansIOTransport

from .fanout import records_json
from .firehose import binance_trade, firehose_records

KEY = "bench-key-0123456789abcdef-01234"


@contextlib.contextmanager
def postgres(directory: Path | None = None) -> Iterator[str]:
    """An admin DSN: the server configured as for ``sluice serve`` (``POSTGRES_DSN`` or
    ``POSTGRES_*``), or an embedded one in ``directory`` (a temporary one by default).
    The test suite uses it too."""
    if dsn := Settings.from_env().postgres_dsn:
        yield psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
        return
    from engine.storage.embedded import embedded_postgres

    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        yield stack.enter_context(embedded_postgres(directory, "postgres"))


@contextlib.contextmanager
def fresh_database(admin: str, prefix: str = "sluice_bench") -> Iterator[str]:
    """A new, empty database on the ``admin`` server, dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(admin, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


STORE_BATCH: int = attrs.fields(Settings).batch_size.default


def store_ceiling(dsn: str, n: int) -> float:
    """Rows/s for binary COPY of the firehose's rows in the writer's default batch size
    (:data:`STORE_BATCH`), no network source."""
    settings = Settings(postgres_dsn=dsn, pool_min=1, pool_max=2, encryption_key=KEY)
    records = firehose_records(0, n)

    async def run() -> float:
        async with Database.open(settings) as db:
            started = time.perf_counter()
            for i in range(0, n, STORE_BATCH):
                await db.sink(insert_records, records[i : i + STORE_BATCH])
            return n / (time.perf_counter() - started)

    return trio.run(run)


def announce_cost(dsn: str, n: int, batch: int = 500) -> dict[str, float]:
    """Commits/s of ``batch``-record writes with and without the cluster's NOTIFY of the
    committed ids (one listener connected, as in a cluster), alternating three rounds:
    NOTIFY takes a database-wide lock while its transaction commits."""
    settings = Settings(postgres_dsn=dsn, pool_min=1, pool_max=2, encryption_key=KEY)
    records = firehose_records(0, n)
    listener = psycopg.connect(dsn, autocommit=True)
    listener.execute(f"LISTEN {cluster_sql.FEED_CHANNEL}")

    async def run() -> dict[str, float]:
        best = {False: 0.0, True: 0.0}
        async with Database.open(settings) as db:
            for round_ in range(3):
                for announce in (False, True):
                    chunk = records[round_ * n // 3 : (round_ + 1) * n // 3]
                    chunk = [evolve_record(r, dedup_key=f"{r.dedup_key}:{announce}") for r in chunk]
                    started = time.perf_counter()
                    for i in range(0, len(chunk), batch):
                        await db.sink(
                            cluster_sql.write_fenced,
                            chunk[i : i + batch],
                            "bench",
                            {},
                            set(),
                            announce,
                        )
                    commits = len(chunk) / batch / (time.perf_counter() - started)
                    best[announce] = max(best[announce], commits)
                    await trio.to_thread.run_sync(_drain_notifications, listener)
        return {"plain_commits_per_s": best[False], "notify_commits_per_s": best[True]}

    try:
        return trio.run(run)
    finally:
        listener.close()


def _drain_notifications(conn: psycopg.Connection[Any]) -> None:
    for _ in conn.notifies(timeout=0.1):
        pass


# DESIGN.md's reference measurements of this project's machine, taken when the targets
# were set: one Trio memory-channel hop between two tasks (measured here through a
# buffered channel, the faster reading), and one trio.to_thread.run_sync
# round trip, per second. Measuring the same two things now says how fast this machine is
# today compared with then (the machine is shared; its speed moves from day to day).
DESIGN_CHANNEL_HOPS = 185_000
DESIGN_THREAD_TRIPS = 12_700


def machine_speed() -> dict[str, float]:
    """DESIGN.md's two CPU-bound reference figures, measured again now, and their ratio to
    DESIGN.md's (geometric mean; 1.0 = as fast as when the targets were set)."""

    async def run() -> tuple[float, float]:
        n = 100_000
        send, receive = trio.open_memory_channel[int](1000)

        async def produce() -> None:
            async with send:
                for i in range(n):
                    await send.send(i)

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async for _ in receive:
                pass
        hops = n / (time.perf_counter() - started)
        trips = 5_000
        started = time.perf_counter()
        for _ in range(trips):
            await trio.to_thread.run_sync(int)
        return hops, trips / (time.perf_counter() - started)

    hops, trips = trio.run(run)
    return {
        "channel_hops": hops,
        "thread_trips": trips,
        "factor": math.sqrt(hops / DESIGN_CHANNEL_HOPS * trips / DESIGN_THREAD_TRIPS),
    }


def naive_baseline(dsn: str, n: int) -> float:
    """Messages/s for the original design: asyncio, one INSERT and one COMMIT each."""

    async def run() -> float:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS naive (id bigserial, data jsonb, price numeric)"
            )
            await conn.commit()
            started = time.perf_counter()
            for i in range(n):
                message = orjson.loads(b'{"t":%d,"p":"42000.10"}' % i)
                await conn.execute(
                    "INSERT INTO naive (data, price) VALUES (%s, %s)",
                    (orjson.dumps(message).decode(), message["p"]),
                )
                await conn.commit()
            return n / (time.perf_counter() - started)

    return asyncio.run(run())


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None, *, ready: str, stdin: bool = False
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start a helper process and wait until it prints a line containing ``ready``."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    try:
        deadline = time.time() + 120
        for line in proc.stdout:
            if ready in line:
                break
            if time.time() > deadline:
                raise RuntimeError(f"{args} did not start")
        else:
            raise RuntimeError(f"{args} exited before it was ready")
        # Keep reading what it prints, so a full pipe never blocks it; keep the lines.
        lines: list[str] = []
        drain = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
        drain.start()
        _output[proc.pid] = lines
        yield proc, line
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_output: dict[int, list[str]] = {}


def output_of(proc: subprocess.Popen[str]) -> list[str]:
    """Lines a helper process printed after it was ready (so far)."""
    return _output.get(proc.pid, [])


def normalize_cost(n: int = 20_000) -> dict[str, float]:
    """µs per message to decode and normalize the firehose's Binance trades through the
    Binance normalizer directly and through ``custom`` (shape detection first), best of
    three alternating rounds: what detection costs a source whose exchange is unknown.
    Known exchanges never take the detour."""
    now = time.time()
    frames = [binance_trade(i, int(now * 1000), now).encode() for i in range(n)]
    received = datetime.now(UTC)
    best = {"binance": math.inf, "custom": math.inf}
    for _ in range(3):
        for exchange in best:
            normalize = normalizer_for(exchange)
            ctx = Context("conn_bench", exchange)
            started = time.perf_counter()
            for frame in frames:
                message, raw = decode(frame)
                normalize(message, raw, ctx, received)
            best[exchange] = min(best[exchange], (time.perf_counter() - started) / n * 1e6)
    return {"known_us": best["binance"], "detected_us": best["custom"]}


def transport_ceiling(n: int) -> float:
    """Messages/s received and parsed from the firehose, nothing stored."""
    with process(["-m", "bench.firehose", "--count", str(n)], ready="PORT") as (_, line):
        port = int(line.split()[1])

        async def run() -> float:
            got = 0
            async with SansIOTransport().connect(
                f"ws://127.0.0.1:{port}/", max_message_bytes=1 << 20, open_timeout=10
            ) as conn:
                started = time.perf_counter()
                while got < n:
                    for message in await conn.receive_messages():
                        orjson.loads(message)
                        got += 1
                return n / (time.perf_counter() - started)

        return trio.run(run)


def fanout_ceiling(subscribers: int, rate: float, count: int) -> dict[str, float]:
    """``bench.fanout`` (pre-built frames written to every socket, nothing else) feeding
    ``subscribers`` subscriber connections at ``rate`` records/s: the least the fan-out of
    the ``subscribers-1000`` scenario costs on this machine. Returns CPU in cores (the
    sender's user and kernel time apart), the slowest subscriber's count and latency."""
    with contextlib.ExitStack() as stack:
        fanout, line = stack.enter_context(
            process(
                [
                    *("-m", "bench.fanout", "--connections", str(subscribers)),
                    *("--count", str(count), "--rate", str(rate)),
                ],
                ready="PORT",
            )
        )
        base = f"http://127.0.0.1:{line.split()[1]}"
        scenario = Scenario("fanout", "", count, rate=rate, subscribers=subscribers)
        sender = psutil.Process(fanout.pid)
        before = sender.cpu_times()
        procs = _start_subscribers(stack, base, scenario)
        started = time.perf_counter()
        results = [_subscriber_result(p) for p in procs]
        elapsed = time.perf_counter() - started
        after = sender.cpu_times()
        return {
            "sender_user": (after.user - before.user) / elapsed,
            "sender_system": (after.system - before.system) / elapsed,
            "subscribers_cpu": sum(r.get("cpu_seconds", 0.0) for r in results) / elapsed,
            "received_min": min((r["received_min"] for r in results), default=0),
            "expected": count,
            "p99_ms": _most(r["p99_ms"] for r in results),
            "p50_ms": _most(r["p50_ms"] for r in results),
            "megabytes_per_s": subscribers * rate * len(",".join(records_json(0, 100))) / 100e6,
        }


def http_client_ceiling(pollers: int, seconds: float) -> dict[str, float]:
    """The HTTP client alone: ``pollers`` tasks, each a GET a second through one shared
    httpx client (as the REST connectors share one) against the firehose; nothing stored.
    Returns the CPU it used (cores) and the p99 of how late each tick started (ms)."""
    with process(["-m", "bench.firehose", "--count", "0"], ready="PORT") as (_, line):
        url = f"http://127.0.0.1:{line.split()[1]}/rest"

        async def run() -> dict[str, float]:
            late: list[float] = []
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
            # No pool timeout: a poller waiting for a free connection is late, and lateness
            # is what this measures.
            timeout = httpx.Timeout(30.0, pool=None)
            async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

                async def poll(offset: float, end: float) -> None:
                    tick = trio.current_time() + offset
                    while tick < end:
                        await trio.sleep_until(tick)
                        late.append(trio.current_time() - tick)
                        async with client.stream("GET", url) as response:
                            await response.aread()
                        tick += 1.0
                        while tick < trio.current_time():
                            tick += 1.0

                process_ = psutil.Process()
                before = process_.cpu_times()
                started = time.perf_counter()
                end = trio.current_time() + seconds
                async with trio.open_nursery() as nursery:
                    for i in range(pollers):
                        nursery.start_soon(poll, i / pollers, end)
                after = process_.cpu_times()
                elapsed = time.perf_counter() - started
            late.sort()
            return {
                "cores": (after.user + after.system - before.user - before.system) / elapsed,
                "tick_p99_ms": 1000 * late[int(0.99 * (len(late) - 1))] if late else math.nan,
                "requests_per_s": len(late) / elapsed,
            }

        return trio.run(run)


def _checkpoints(admin: str, *, first: bool = False) -> int:
    """PostgreSQL's checkpoints so far (timed and requested), server-wide; with ``first``,
    after writing every dirty page now (``CHECKPOINT``)."""
    with psycopg.connect(admin, autocommit=True) as conn:
        if first:
            conn.execute("CHECKPOINT")
        if conn.info.server_version >= 170000:
            query = "SELECT num_timed + num_requested FROM pg_stat_checkpointer"
        else:
            query = "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def profiled(pid: int, output: str | None) -> Iterator[None]:
    """Sample ``pid`` with py-spy while the block runs; write a flame graph to ``output``
    (``.txt``: collapsed stacks instead)."""
    if not output:
        yield
        return
    # py-spy is a dev dependency: it sits next to this interpreter, maybe not on PATH.
    spy_bin = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or "py-spy"
    command = [spy_bin, "record", "--pid", str(pid), "--rate", "250", "--gil", "--output", output]
    if output.endswith(".txt"):
        command += ["--format", "raw"]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)


@attrs.frozen
class Scenario:
    """One benchmark scenario; a WebSocket or a REST load, optionally with a stall or soak."""

    key: str
    name: str
    count: int = 0  # trades per WebSocket connection
    rate: float = 0.0  # trades/s per connection; 0 = as fast as possible
    connections: int = 1
    exchange: str = "binance"  # the firehose format: binance or okx
    subscribers: int = 1
    batch_frames: bool = True
    rest_connectors: int = 0
    duration: float = 0.0  # REST scenarios: seconds to poll
    stall_at: float = 0.0  # seconds after the start
    stall_for: float = 0.0
    soak: bool = False  # sample RSS every second and report its slope
    compression: bool = False  # subscribers offer permessage-deflate
    max_lag: int = 1_000_000  # SLUICE_REALTIME_MAX_LAG: max-rate runs let subscribers lag
    #: ``sluice serve`` processes on the one database (a cluster); connectors are created
    #: and started through the first, which the subscribers also connect to.
    instances: int = 1

    @property
    def expected(self) -> int:
        return self.count * self.connections


class CpuMeter:
    """CPU seconds used by groups of processes between two readings."""

    def __init__(self, groups: dict[str, Callable[[], list[psutil.Process]]]) -> None:
        self.groups = groups
        self.start = self._read()

    def _read(self) -> dict[str, dict[int, float]]:
        readings: dict[str, dict[int, float]] = {}
        for name, find in self.groups.items():
            readings[name] = {}
            for proc in find():
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    readings[name][proc.pid] = times.user + times.system
        return readings

    def used(self) -> dict[str, float]:
        end = self._read()
        return {
            name: sum(t - self.start[name].get(pid, 0.0) for pid, t in pids.items())
            for name, pids in end.items()
        }


def postgres_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name"]):
        if (proc.info["name"] or "").startswith("postgres"):
            found.append(proc)
    return found


class Progress:
    """One status line while a scenario runs: rewritten in place on a terminal, else a
    line every five seconds."""

    def __init__(self, stream: IO[str] = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0

    def show(self, text: str) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
        elif now - self.last >= 5:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last = now

    def done(self, text: str) -> None:
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        self.stream.flush()
        self.last = 0.0


def parse_metrics(text: str) -> dict[str, float]:
    """Sum Prometheus samples by metric name (labels other than ``le`` dropped)."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        le = re.search(r'le="([^"]+)"', name_labels)
        if le:
            name = f"{name}|{le.group(1)}"
        totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def histogram_quantile(
    metrics: dict[str, float], base: dict[str, float], name: str, q: float
) -> float:
    """Upper bound of the bucket holding quantile ``q`` of the samples since ``base``."""
    buckets = sorted(
        (float("inf") if k.endswith("|+Inf") else float(k.split("|")[1]), v - base.get(k, 0.0))
        for k, v in metrics.items()
        if k.startswith(name + "_bucket|")
    )
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    total = buckets[-1][1]
    for bound, cumulative in buckets:
        if cumulative >= q * total:
            return bound
    return float("inf")


def run_scenario(
    admin: str,
    scenario: Scenario,
    progress: Progress | None = None,
    profile: str | None = None,
) -> dict[str, Any]:
    """One scenario through real processes; returns its measurements."""
    progress = progress or Progress()
    with contextlib.ExitStack() as stack:
        dsn = stack.enter_context(fresh_database(admin))
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        engine_dsn = dsn
        proxy = None
        if scenario.stall_for:
            proxy, proxy_line = stack.enter_context(
                process(["-m", "bench.fault_proxy", dsn], ready="PORT", stdin=True)
            )
            engine_dsn = psycopg.conninfo.make_conninfo(
                dsn, host="127.0.0.1", port=int(proxy_line.split()[1])
            )
        env = {
            "POSTGRES_DSN": engine_dsn,
            "ENCRYPTION_KEY": KEY,
            "SLUICE_ALLOW_PRIVATE_NETWORKS": "true",
            "SLUICE_DATA_DIR": tmp,
            "SLUICE_LOG_LEVEL": "INFO",
            "SLUICE_REALTIME_MAX_LAG": str(scenario.max_lag),
            "SLUICE_REALTIME_MAX_SUBSCRIBERS": str(max(1000, scenario.subscribers + 10)),
        }
        servers = [
            stack.enter_context(
                process(
                    ["-m", "server.cli", "serve", "--port", "0"],
                    {**env, "SLUICE_DATA_DIR": os.path.join(tmp, f"i{k}")},
                    ready="listening on",
                )
            )
            for k in range(scenario.instances)
        ]
        server, line = servers[0]
        urls = [re.search(r"(http://\S+)", ready).group(1) for _, ready in servers]  # type: ignore[union-attr]
        if scenario.instances > 1:
            _await_cluster(urls[0], scenario.instances)
        fire_args = ["-m", "bench.firehose", "--count", str(scenario.count)]
        fire_args += ["--rate", str(scenario.rate)]
        firehose, fire_line = stack.enter_context(process(fire_args, ready="PORT"))
        base = re.search(r"(http://\S+)", line).group(1)  # type: ignore[union-attr]
        port = int(fire_line.split()[1])
        client = stack.enter_context(httpx.Client(base_url=base, timeout=60))
        peers = [stack.enter_context(httpx.Client(base_url=u, timeout=60)) for u in urls[1:]]

        def read_metrics() -> dict[str, float]:
            """Every instance's metrics, summed (counters and histogram buckets add up)."""
            total = parse_metrics(client.get("/metrics").text)
            for peer in peers:
                for key, value in parse_metrics(peer.get("/metrics").text).items():
                    total[key] = total.get(key, 0.0) + value
            return total

        subscribers = _start_subscribers(stack, base, scenario)

        bodies: list[dict[str, Any]] = [
            {
                "name": f"bench-ws-{i}",
                "api_url": f"ws://127.0.0.1:{port}/{scenario.exchange}",
                "exchange": scenario.exchange,
            }
            for i in range(scenario.connections if scenario.count else 0)
        ]
        bodies += [
            {
                "name": f"bench-rest-{i}",
                "api_url": f"http://127.0.0.1:{port}/rest",
                "polling_interval": 1000,
            }
            for i in range(scenario.rest_connectors)
        ]
        ids = []
        for body in bodies:
            response = client.post("/api/connectors", json=body)
            response.raise_for_status()
            ids.append(response.json()["connector_id"])

        engines = [psutil.Process(p.pid) for p, _ in servers]
        cpu = CpuMeter(
            {
                "engine": lambda: engines,
                "postgres": postgres_processes,
                "load": lambda: [psutil.Process(p.pid) for p in [firehose, *subscribers]],
            }
        )
        # The scenario before left dirty pages and WAL: written now, they do not land as
        # a checkpoint inside this one (its own WAL may still cause one: counted below).
        checkpoints_before = _checkpoints(admin, first=True)
        metrics_before = read_metrics()
        rss: list[tuple[float, float]] = []
        stall = "pending" if proxy else "none"
        # After the stall: when writing resumed, and when the spool was empty again with
        # everything received stored (the catch-up), and how much was replayed by then.
        resumed_at = caught_up_at = None
        replayed_at_resume = replayed = 0.0
        poll = 0.2 if len(ids) <= 10 else 1.0
        with profiled(server.pid, profile):
            started = time.perf_counter()
            # As a deployment script would: several starts in flight, so starting 200
            # connectors is not 200 round trips one after another inside the window.
            with ThreadPoolExecutor(2) as starters:
                for response in starters.map(
                    lambda cid: client.post(f"/api/connectors/{cid}/start"), ids
                ):
                    response.raise_for_status()
            while True:
                elapsed = time.perf_counter() - started
                metrics = read_metrics()
                # The largest process (instances are separate processes, each its own RSS).
                rss.append((elapsed, max(e.memory_info().rss for e in engines) / 2**20))
                stored = metrics.get("sluice_writer_rows_total", 0.0)
                received = metrics.get("sluice_connector_messages_received_total", 0.0)
                if proxy and stall == "pending" and elapsed >= scenario.stall_at:
                    _command(proxy, "stall")
                    stall = "stalled"
                if (
                    proxy
                    and stall == "stalled"
                    and elapsed >= scenario.stall_at + scenario.stall_for
                ):
                    _command(proxy, "resume")
                    stall = "resumed"
                    resumed_at = elapsed
                    replayed_at_resume = metrics.get("sluice_spool_replayed_total", 0.0)
                if stall == "resumed" and caught_up_at is None and stored >= received:
                    # Everything received is stored, so the spool has replayed it all (its
                    # "spooling" flag clears a moment later: waiting for it missed the
                    # catch-up when it came with the last record, as in one full run).
                    caught_up_at = elapsed
                    replayed = metrics.get("sluice_spool_replayed_total", 0.0) - replayed_at_resume
                progress.show(
                    f"{scenario.key}: {elapsed:6.1f} s  received {received:,.0f}  "
                    f"stored {stored:,.0f}  RSS {rss[-1][1]:.0f} MiB"
                    + (f"  database {stall}" if proxy else "")
                )
                if scenario.rest_connectors:
                    if elapsed >= scenario.duration:
                        break
                elif stored >= scenario.expected and stall != "stalled":
                    break
                if elapsed > max(600.0, 3 * scenario.duration):
                    break
                time.sleep(poll)
            stopped = time.perf_counter()
            used = cpu.used()
        checkpoints = _checkpoints(admin) - checkpoints_before
        elapsed = stopped - started
        results = [_subscriber_result(s) for s in subscribers]
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM websocket_messages),"
                " (SELECT count(*) FROM api_connector_data)"
            ).fetchone()
        assert row is not None
        rows = int(row[0] + row[1])
        progress.done(f"{scenario.key}: done in {elapsed:.1f} s")
        second_half = [(t, r) for t, r in rss if t >= elapsed / 2]
        output = [text for p, _ in servers for text in output_of(p)]
        steps = [
            float(m.group(1))
            for text in output
            if (m := re.search(r"slow task step: .* took ([0-9.]+) ms", text))
        ]
        result: dict[str, Any] = {
            "key": scenario.key,
            "scenario": scenario.name,
            "max_rate": not scenario.rate and not scenario.rest_connectors,
            "expected": scenario.expected,
            "rows_in_table": rows,
            "seconds": elapsed,
            "committed_per_s": rows / elapsed,
            "received_min": min((r["received_min"] for r in results), default=0),
            "closed_early": sum(r["closed_early"] for r in results),
            "delivered_per_s": _least(r["rate"] for r in results),
            "p50_ms": _most(r["p50_ms"] for r in results),
            "p90_ms": _most(r["p90_ms"] for r in results),
            "p99_ms": _most(r["p99_ms"] for r in results),
            "max_ms": _most(r["max_ms"] for r in results),
            "arrival_p50_ms": _most(r["arrival_p50_ms"] for r in results),
            "arrival_p99_ms": _most(r["arrival_p99_ms"] for r in results),
            "checkpoints": checkpoints,
            "engine_cpu": used["engine"] / elapsed,
            "postgres_cpu": used["postgres"] / elapsed,
            "load_cpu": used["load"] / elapsed,
            "engine_us_per_record": 1e6 * used["engine"] / max(rows, 1),
            "postgres_us_per_record": 1e6 * used["postgres"] / max(rows, 1),
            "load_us_per_record": 1e6 * used["load"] / max(rows, 1),
            "peak_rss_mib": max(r for _, r in rss),
            "rss_slope_mib_per_min": _slope(second_half) * 60 if scenario.soak else None,
            "slow_steps": len(steps),
            "slow_gc": sum("garbage collection" in text for text in output),
            "slowest_step_ms": max(steps, default=0.0),
            "gaps": int(metrics.get("sluice_connector_messages_gap_total", 0)),
            "rejected": int(metrics.get("sluice_connector_messages_rejected_total", 0)),
        }
        if resumed_at is not None and caught_up_at is not None:
            catch_up = max(caught_up_at - resumed_at, 1e-3)
            result["catch_up_seconds"] = catch_up
            result["spooled"] = int(metrics.get("sluice_spool_records_total", 0))
            result["replay_per_s"] = replayed / catch_up
            result["replay_ratio"] = replayed / catch_up / scenario.rate if scenario.rate else 0
        final = read_metrics()
        flush = "sluice_writer_flush_seconds"
        result["flush_p50_ms"] = 1000 * histogram_quantile(final, metrics_before, flush, 0.5)
        result["flush_p99_ms"] = 1000 * histogram_quantile(final, metrics_before, flush, 0.99)
        result["batches"] = int(final.get("sluice_writer_batches_total", 0))
        if scenario.rest_connectors:
            name = "sluice_rest_tick_lateness_seconds"
            result["ticks"] = int(
                final.get(f"{name}_count", 0) - metrics_before.get(f"{name}_count", 0)
            )
            result["tick_p99_ms"] = 1000 * histogram_quantile(final, metrics_before, name, 0.99)
            result["tick_p50_ms"] = 1000 * histogram_quantile(final, metrics_before, name, 0.50)
            result["skipped_ticks"] = int(final.get("sluice_connector_skipped_ticks_total", 0))
            result["requests"] = int(final.get("sluice_connector_requests_total", 0))
        return result


def _await_cluster(url: str, instances: int, timeout: float = 30.0) -> None:
    """Until the first instance has seen every instance live in a heartbeat of its own (so
    the quotas it computes when starting connectors count them all)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = httpx.get(f"{url}/api/cluster", timeout=10).json()["instances"]
        live = [r for r in rows if r["live"]]
        me = next((r for r in rows if r["self"]), None)
        if (
            len(live) >= instances
            and me is not None
            and me["heartbeat_at"] > max(r["started_at"] for r in live)
        ):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{instances} instances did not form a cluster within {timeout:g} s")


def _start_subscribers(
    stack: contextlib.ExitStack, base: str, scenario: Scenario
) -> list[subprocess.Popen[str]]:
    """Subscriber processes (at most four), each holding its share of the connections."""
    if not scenario.subscribers or not scenario.expected:
        return []
    url = base.replace("http://", "ws://") + "/api/realtime"
    if scenario.batch_frames:
        url += "?batch=true"
    processes = min(4, scenario.subscribers)
    started = []
    for i in range(processes):
        share = scenario.subscribers // processes + (i < scenario.subscribers % processes)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.subscriber",
                url,
                str(scenario.expected),
                "--connections",
                str(share),
                "--timeout",
                str(max(300.0, 3 * scenario.expected / max(scenario.rate, 1.0))),
                *(["--compression"] if scenario.compression else []),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        stack.callback(_reap, proc)
        assert proc.stdout is not None
        if "READY" not in proc.stdout.readline():
            raise RuntimeError("a subscriber process could not connect")
        started.append(proc)
    return started


def _subscriber_result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """A subscriber process's JSON line; one that printed none counts as receiving none."""
    try:
        lines = proc.communicate(timeout=600)[0].strip().splitlines()
        found = orjson.loads(lines[-1]) if lines else {}
    except (subprocess.TimeoutExpired, orjson.JSONDecodeError):
        proc.kill()
        found = {}
    nan = float("nan")
    result: dict[str, Any] = {"received_min": 0, "closed_early": 0, "rate": nan}
    result.update({k: nan if v is None else v for k, v in found.items()})
    for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "arrival_p50_ms", "arrival_p99_ms"):
        result.setdefault(key, nan)
    return result


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _command(proxy: subprocess.Popen[str], command: str) -> None:
    assert proxy.stdin is not None
    proxy.stdin.write(command + "\n")
    proxy.stdin.flush()
    deadline = time.monotonic() + 10
    while f"OK {command}\n" not in output_of(proxy) and time.monotonic() < deadline:
        time.sleep(0.01)


def _least(values: Iterable[float]) -> float:
    return min((v for v in values if finite(v)), default=float("nan"))


def _most(values: Iterable[float]) -> float:
    return max((v for v in values if finite(v)), default=float("nan"))


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (units per second) of (t, value) points."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if not var:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def machine() -> str:
    return (
        f"{platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
    )


def finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
