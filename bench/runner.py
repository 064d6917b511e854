"""The benchmark runner: ceilings and the naive baseline measured in the same run, then
end-to-end scenarios through a real ``sluice serve`` process, a firehose process and
subscriber processes. Results are ratios against the baselines of this run.

PostgreSQL: ``POSTGRES_DSN`` when set (a fresh database is created per scenario), else an
embedded server in a temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import psutil
import psycopg
import trio
from psycopg import sql

from engine.config import Settings
from engine.models import Record
from engine.storage import Database
from engine.storage.records import insert_records
from engine.transport import SansIOTransport

KEY = "bench-key-0123456789abcdef-01234"


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """An admin DSN: the configured server, or an embedded one for this run."""
    if dsn := os.environ.get("POSTGRES_DSN"):
        yield psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
        return
    from engine.storage.embedded import embedded_postgres

    with tempfile.TemporaryDirectory() as tmp, embedded_postgres(Path(tmp), "postgres") as dsn:
        yield dsn


@contextlib.contextmanager
def fresh_database(admin: str) -> Iterator[str]:
    name = f"sluice_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(admin, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _records(n: int) -> list[Record]:
    now = datetime.now(UTC)
    return [
        Record(
            connector_id="bench",
            exchange="binance",
            instrument="BTCUSDT",
            price=f"42{i % 1000:03d}.{i % 100:02d}",
            size="0.00100000",
            side="buy",
            message_type="trade",
            timestamp=now,
            received_at=now,
            data=b'{"e":"trade","s":"BTCUSDT","t":%d,"p":"42000.10","q":"0.001"}' % i,
            dedup_key=f"t:BTCUSDT:{i}",
        )
        for i in range(n)
    ]


def store_ceiling(dsn: str, n: int) -> float:
    """Rows/s for binary COPY of prepared rows, 2,000 per batch, no network source."""
    settings = Settings(postgres_dsn=dsn, pool_min=1, pool_max=2, encryption_key=KEY)
    records = _records(n)

    async def run() -> float:
        async with Database.open(settings) as db:
            started = time.perf_counter()
            for i in range(0, n, 2000):
                await db.sink(insert_records, records[i : i + 2000])
            return n / (time.perf_counter() - started)

    return trio.run(run)


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
    args: list[str], env: dict[str, str] | None = None, *, ready: str
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start a helper process and wait until it prints a line containing ``ready``."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    try:
        deadline = time.time() + 60
        for line in proc.stdout:
            if ready in line:
                break
            if time.time() > deadline:
                raise RuntimeError(f"{args} did not start")
        else:
            raise RuntimeError(f"{args} exited before it was ready")
        yield proc, line
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


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


@attrs.frozen
class Scenario:
    name: str
    count: int
    rate: float = 0.0
    subscribers: int = 1
    batch_frames: bool = True


def end_to_end(admin: str, scenario: Scenario) -> dict[str, Any]:
    """One scenario through real processes; the committed rate is checked in the table."""
    with fresh_database(admin) as dsn, tempfile.TemporaryDirectory() as tmp:
        env = {
            "POSTGRES_DSN": dsn,
            "ENCRYPTION_KEY": KEY,
            "SLUICE_ALLOW_PRIVATE_NETWORKS": "true",
            "SLUICE_DATA_DIR": tmp,
            "SLUICE_LOG_LEVEL": "WARNING",
            "SLUICE_REALTIME_MAX_LAG": "1000000",
        }
        serve_args = ["-m", "server.cli", "serve", "--port", "0"]
        fire_args = [
            "-m",
            "bench.firehose",
            "--count",
            str(scenario.count),
            "--rate",
            str(scenario.rate),
        ]
        with (
            process(serve_args, {**env, "SLUICE_LOG_LEVEL": "INFO"}, ready="listening on") as (
                server,
                line,
            ),
            process(fire_args, ready="PORT") as (_, fire_line),
        ):
            base = re.search(r"(http://\S+)", line).group(1)  # type: ignore[union-attr]
            port = int(fire_line.split()[1])
            ws = (
                base.replace("http://", "ws://")
                + "/api/realtime"
                + ("?batch=true" if scenario.batch_frames else "")
            )
            subscribers = []
            for _ in range(scenario.subscribers):
                sub = subprocess.Popen(
                    [sys.executable, "-m", "bench.subscriber", ws, str(scenario.count)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert sub.stdout is not None
                sub.stdout.readline()  # READY
                subscribers.append(sub)
            engine = psutil.Process(server.pid)
            cpu_before = engine.cpu_times()
            peak_rss = 0
            with httpx.Client(base_url=base, timeout=30) as client:
                body = {
                    "name": "bench",
                    "api_url": f"ws://127.0.0.1:{port}/",
                    "exchange": "binance",
                }
                cid = client.post("/api/connectors", json=body).json()["connector_id"]
                started = time.perf_counter()
                client.post(f"/api/connectors/{cid}/start")
                while True:
                    status = client.get(f"/api/connectors/{cid}/status").json()
                    peak_rss = max(peak_rss, engine.memory_info().rss)
                    if (
                        status["records_stored"] >= scenario.count
                        or time.perf_counter() - started > 600
                    ):
                        break
                    time.sleep(0.05)
                stored_at = time.perf_counter()
            cpu_after = engine.cpu_times()
            results = [
                orjson.loads(s.communicate(timeout=120)[0].strip().splitlines()[-1])
                for s in subscribers
            ]
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM websocket_messages").fetchone()
        elapsed = stored_at - started
        cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        return {
            "scenario": scenario.name,
            "messages": scenario.count,
            "rows_in_table": row[0] if row else 0,
            "committed_per_s": scenario.count / elapsed,
            "delivered_per_s": min(r["rate"] for r in results),
            "p50_ms": max(r["p50_ms"] for r in results),
            "p99_ms": max(r["p99_ms"] for r in results),
            "max_ms": max(r["max_ms"] for r in results),
            "engine_cpu_core": cpu / elapsed,
            "peak_rss_mib": peak_rss / 2**20,
            "gaps": status["messages_gap"],
            "rejected": status["messages_rejected"],
        }


def machine() -> str:
    return (
        f"{platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
    )
