"""What the record table's shape costs the store, and retention by dropping a day.

* :func:`index_costs`: rows/s of COPY into the record table with different index sets,
  the same rows and batches as the store ceiling, alternating rounds (best of each).
  The shipped set against a primary-key-only table is a target (≥ 75%); the round-1
  schema (unpartitioned, three secondary B-trees and a BRIN) shows what partitioning and
  the index study saved.
* :func:`retention_drop` (scenario ``retention-50M``): a day partition of N rows that has
  expired, a steady insert load into today's partition, then one retention pass; how long
  the drop takes and what the inserts' commit latency did meanwhile. For contrast, the
  round-1 way (bounded row deletes) measured on a smaller day of its own.
"""

from __future__ import annotations

import glob
import os
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import trio
from psycopg import sql

from engine.config import Settings
from engine.models import evolve_record
from engine.retention import Retention
from engine.storage import Database, partitions
from engine.storage import retention as retention_sql
from engine.storage.records import _DIRECT_COLUMNS, _EXTRA, copy_text, insert_records

from .firehose import firehose_records
from .runner import KEY, STORE_BATCH, fresh_database

_T = "bench_store"
_PK = f'ALTER TABLE {_T} ADD PRIMARY KEY (id, "timestamp")'
_DEDUP = f'CREATE UNIQUE INDEX ON {_T} (connector_id, "timestamp", dedup_key)'
_UNOWNED = f'CREATE UNIQUE INDEX ON {_T} (dedup_key, "timestamp") WHERE connector_id IS NULL'
_INSTRUMENT = f'CREATE INDEX ON {_T} (exchange, instrument, "timestamp")'
_TIME = f'CREATE INDEX ON {_T} ("timestamp")'
# Round 1's table: not partitioned, and these indexes (migrations 1 and 2).
_ROUND_1 = [
    f"ALTER TABLE {_T} ADD PRIMARY KEY (id)",
    f"CREATE UNIQUE INDEX ON {_T} (connector_id, dedup_key)",
    f"CREATE UNIQUE INDEX ON {_T} (dedup_key) WHERE connector_id IS NULL",
    f'CREATE INDEX ON {_T} (connector_id, "timestamp")',
    f'CREATE INDEX ON {_T} (exchange, instrument, "timestamp")',
    f'CREATE INDEX ON {_T} USING brin ("timestamp")',
]
VARIANTS: dict[str, tuple[bool, list[str]]] = {  # name → (partitioned, indexes)
    "pk_only": (True, [_PK]),
    "dedup": (True, [_PK, _DEDUP, _UNOWNED]),
    "shipped": (True, [_PK, _DEDUP, _UNOWNED, _TIME]),
    "instrument": (True, [_PK, _DEDUP, _UNOWNED, _TIME, _INSTRUMENT]),
    "round1": (False, _ROUND_1),
}
INSTRUMENTS = 20


def index_costs(dsn: str, n: int, rounds: int = 3) -> dict[str, float]:
    """Rows/s into each of :data:`VARIANTS` (keys ``<variant>_rows_per_s``). The rows are
    the firehose's, spread over :data:`INSTRUMENTS` instruments and 10 µs apart, as a
    busy feed's are (the firehose itself stamps a whole chunk with one time and one
    instrument, which flatters the indexes on them)."""
    records = [
        evolve_record(
            r,
            instrument=f"SYM{i % INSTRUMENTS}",
            timestamp=r.timestamp + timedelta(microseconds=10 * i),
        )
        for i, r in enumerate(firehose_records(0, n))
    ]
    columns = f"{_DIRECT_COLUMNS}{_EXTRA['websocket']}"
    buffers = [
        copy_text(list(range(i + 1, i + 1 + len(chunk))), chunk)
        for i in range(0, n, STORE_BATCH)
        if (chunk := records[i : i + STORE_BATCH])
    ]
    days = {partitions.day_of(r.timestamp) for r in records}
    best = dict.fromkeys(VARIANTS, 0.0)
    with psycopg.connect(dsn) as conn:
        for _ in range(rounds):
            for variant, (partitioned, indexes) in VARIANTS.items():
                _create(conn, partitioned, indexes, days)
                started = time.perf_counter()
                for buffer in buffers:
                    with conn.cursor() as cur, cur.copy(f"COPY {_T} ({columns}) FROM STDIN") as c:
                        c.write(buffer)
                    conn.commit()
                best[variant] = max(best[variant], n / (time.perf_counter() - started))
        conn.execute(f"DROP TABLE {_T}")
        conn.commit()
    return {f"{k}_rows_per_s": v for k, v in best.items()}


def _create(
    conn: psycopg.Connection[Any], partitioned: bool, indexes: list[str], days: set[date]
) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {_T}")
    conn.execute(
        f"CREATE TABLE {_T} (LIKE websocket_messages INCLUDING DEFAULTS)"
        + (' PARTITION BY RANGE ("timestamp")' if partitioned else "")
    )
    if partitioned:
        for day in days:
            low, high = partitions.bounds(day)
            conn.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(f"{_T}_p{day:%Y%m%d}"),
                    sql.Identifier(_T),
                    sql.Literal(low),
                    sql.Literal(high),
                )
            )
    for statement in indexes:
        conn.execute(statement)
    conn.commit()
    conn.execute("CHECKPOINT")  # the previous variant's dirty pages are not this one's cost
    conn.commit()


# --- retention-50M ----------------------------------------------------------------

RETENTION_DAYS = 30
LOAD_BATCH = 1_000  # records per insert in the load that runs through the drop
LOAD_INTERVAL = 0.05  # s between inserts: 20,000 records/s
ROW_DELETE_ROWS = 200_000  # the round-1 way, measured on a day of this many rows


def _fill_day(dsn: str, day: date, rows: int, connector: str) -> None:
    """A day partition of ``rows`` trades, filled the fast way: a plain table, its rows,
    a CHECK constraint that spares the attach its scan, then attached (building the
    parent's indexes on it)."""
    name = partitions.name("websocket_messages", day)
    low, high = partitions.bounds(day)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE websocket_messages INCLUDING DEFAULTS)").format(
                sql.Identifier(name)
            )
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (connector_id, exchange, instrument, price, size, side,"
                ' message_type, "timestamp", received_at, data, dedup_key, source_id)'
                " SELECT %s, 'binance', 'BTCUSDT', 42000 + g %% 1000 * 0.01, g %% 100 * 0.001,"
                " CASE WHEN g %% 2 = 0 THEN 'buy' ELSE 'sell' END, 'trade',"
                " %s::timestamptz + (g %% 86400000) * interval '1 millisecond', now(),"
                " jsonb_build_object('e', 'trade', 'E', g, 's', 'BTCUSDT', 't', g,"
                " 'p', '42000.00', 'q', '0.001', 'T', g, 'm', true, 'M', true),"
                " 't:BTCUSDT:' || g, g::text FROM generate_series(1, %s) g"
            ).format(sql.Identifier(name)),
            (connector, low, rows),
        )
        conn.execute(
            sql.SQL(
                "ALTER TABLE {} ADD CONSTRAINT bounds"
                ' CHECK ("timestamp" >= {} AND "timestamp" < {})'
            ).format(sql.Identifier(name), sql.Literal(low), sql.Literal(high))
        )
        conn.execute(
            sql.SQL(
                "ALTER TABLE websocket_messages ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
            ).format(sql.Identifier(name), sql.Literal(low), sql.Literal(high))
        )
        conn.execute("CHECKPOINT")


def retention_drop(admin: str, rows: int) -> dict[str, float]:
    """Drop an expired day of ``rows`` under a 20,000 records/s insert load."""
    with fresh_database(admin) as dsn:
        settings = Settings(postgres_dsn=dsn, pool_min=2, pool_max=4, encryption_key=KEY)
        today = datetime.now(UTC).date()
        big_day = today - timedelta(days=RETENTION_DAYS + 10)
        small_day = big_day - timedelta(days=1)
        started = time.perf_counter()

        async def run() -> dict[str, float]:
            async with Database.open(settings) as db:
                t0 = time.perf_counter()
                await trio.to_thread.run_sync(_fill_day, dsn, big_day, rows, "conn_bench")
                await trio.to_thread.run_sync(
                    _fill_day, dsn, small_day, ROW_DELETE_ROWS, "conn_rowwise"
                )
                filled = time.perf_counter() - t0
                row_rate = await _row_deletes(db)
                await trio.to_thread.run_sync(
                    _settle, dsn, partitions.name("websocket_messages", small_day)
                )
                evicted = await trio.to_thread.run_sync(
                    _evict, dsn, partitions.name("websocket_messages", big_day)
                )
                latencies: list[tuple[float, float]] = []  # (start, seconds)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_load, db, latencies)
                    await trio.sleep(5)
                    retention = Retention(db, RETENTION_DAYS)
                    drop_from = time.perf_counter()
                    await retention.run_once()
                    drop_to = time.perf_counter()
                    await trio.sleep(5)
                    nursery.cancel_scope.cancel()
                dropped = partitions.name("websocket_messages", big_day) in retention.dropped
            before = [s for t, s in latencies if t < drop_from]
            during = [s for t, s in latencies if drop_from <= t <= drop_to]
            return {
                "rows": float(rows),
                "fill_s": filled,
                "drop_s": drop_to - drop_from,
                "dropped": float(dropped),
                "load_commits": float(len(latencies)),
                "before_p99_ms": 1000 * _p99(before),
                "before_max_ms": 1000 * max(before, default=float("nan")),
                "during_max_ms": 1000 * max(during, default=float("nan")),
                "during_commits": float(len(during)),
                "row_delete_rows_per_s": row_rate,
                "evicted_files": float(evicted),
            }

        result = trio.run(run)
        result["setup_s"] = time.perf_counter() - started
        return result


def _settle(dsn: str, partition: str) -> None:
    """Vacuum what the row deletes left in ``partition`` and write every dirty page, so
    their cleanup does not fall in the five seconds before the pass (the comparison). It
    was not all of what slows that window in full runs: commits p99 88 ms there at 19:03
    without this, 104 ms at 19:49 with it, where a run of the pass alone has 8 to 46 ms."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("VACUUM {}").format(sql.Identifier(partition)))
        conn.execute("CHECKPOINT")


def _evict(dsn: str, partition: str) -> int:
    """Drop ``partition``'s files (heap, indexes, TOAST) from the OS page cache, as the
    thirty days since anyone read an expired day have. The bench has just written them,
    and the kernel's freeing of 20 GB of cached pages at the ``DROP`` is a cost of the
    fill, not of retention: hot, the drop took 3.9 s and a concurrent commit 42 ms (13.7
    before); cold, 1.9 s and 34 ms (14.4) — one run each, bench README. Returns the files
    evicted: 0 if the server's data directory is not readable here (the bench's servers
    are local)."""
    with psycopg.connect(dsn) as conn:
        directory = str(conn.execute("SHOW data_directory").fetchone()[0])  # type: ignore[index]
        # The table and its TOAST table, then every index of either.
        paths = [
            row[0]
            for row in conn.execute(
                "WITH t AS (SELECT %(t)s::regclass::oid AS oid UNION ALL"
                " SELECT reltoastrelid FROM pg_class WHERE oid = %(t)s::regclass)"
                " SELECT pg_relation_filepath(oid) FROM t UNION ALL"
                " SELECT pg_relation_filepath(indexrelid) FROM pg_index"
                " WHERE indrelid IN (SELECT oid FROM t)",
                {"t": partition},
            )
            if row[0] is not None
        ]
    evicted = 0
    for path in paths:
        base = os.path.join(directory, path)
        # The main fork and its 1 GB segments (``.1``, ``.2``, …), the other forks (``_fsm``,
        # ``_vm``); not ``base + "*"``, which would match another relation's longer number.
        for file in [base, *glob.glob(base + ".*"), *glob.glob(base + "_*")]:
            try:
                fd = os.open(file, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                evicted += 1
            finally:
                os.close(fd)
    return evicted


def _p99(values: list[float]) -> float:
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100)[98]


async def _row_deletes(db: Database) -> float:
    """Rows/s of the round-1 retention (bounded batches by key) on the small day."""
    job = retention_sql.Job(
        "websocket_messages", "timestamp", RETENTION_DAYS, connector_id="conn_rowwise"
    )
    deleted, started = 0, time.perf_counter()
    while (n := await db.run(retention_sql.delete_batch, job, 5_000)) > 0:
        deleted += n
    return deleted / (time.perf_counter() - started)


async def _load(db: Database, latencies: list[tuple[float, float]]) -> None:
    """Inserts of :data:`LOAD_BATCH` fresh records every :data:`LOAD_INTERVAL` s into
    today's partition, each one's commit timed."""
    template = firehose_records(0, LOAD_BATCH, "conn_load")
    first = 0
    next_at = trio.current_time()
    while True:
        batch = [
            evolve_record(r, dedup_key=f"t:BTCUSDT:{first + i}") for i, r in enumerate(template)
        ]
        first += LOAD_BATCH
        at = time.perf_counter()
        await db.sink(insert_records, batch)
        latencies.append((at, time.perf_counter() - at))
        next_at += LOAD_INTERVAL
        await trio.sleep_until(next_at)
