"""Day partitions of the record tables: on-demand days, deduplication across them,
retention by dropping whole days, and the in-place upgrade of a database from before
them (real ``sluice migrate`` processes, one of them killed with SIGKILL mid-move)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from engine.config import Settings
from engine.models import Record, evolve_record
from engine.retention import Retention
from engine.storage import Database, migrations, partitions, queries
from engine.storage.connectors import insert_connector
from engine.storage.migrations import MIGRATIONS
from engine.storage.records import insert_records

from .conftest import TEST_KEY
from .test_storage import KEEPER, made, record


def where(dsn: str, table: str = "websocket_messages") -> list[tuple[str, str, int]]:
    """(partition, dedup key, id) of every row, in id order."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f"SELECT tableoid::regclass::text, dedup_key, id FROM {table} ORDER BY id"
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


async def test_a_record_lands_in_its_days_partition_made_on_demand_and_a_replay_is_caught(
    settings: Settings, database_dsn: str
) -> None:
    now = datetime.now(UTC)
    backfill = datetime(2019, 3, 1, 12, tzinfo=UTC)  # a day nobody created ahead
    async with Database.open(settings) as db:
        batch = [
            evolve_record(record(1), timestamp=backfill),
            evolve_record(record(2), timestamp=now),
        ]
        batch += [evolve_record(record(10 + i), timestamp=now) for i in range(100)]  # COPY path
        stored, duplicates = await db.run(insert_records, batch)
        assert (len(stored), duplicates) == (102, 0)
        # The exchange sends trade 1 again after a reconnect: another receive time, the
        # same source time, so the same partition, whose unique index knows the key.
        again = evolve_record(batch[0], received_at=now + timedelta(seconds=5))
        assert await db.run(insert_records, [again]) == ([], 1)
        big_again = [evolve_record(r, received_at=now + timedelta(seconds=5)) for r in batch]
        assert await db.run(insert_records, big_again) == ([], 102)
    rows = where(database_dsn)
    assert rows[0][:2] == ("websocket_messages_p20190301", "t:BTC-USDT:1")
    assert {r[0] for r in rows[1:]} == {partitions.name("websocket_messages", now.date())}
    assert len(rows) == 102


async def test_rest_items_without_a_source_time_are_stored_once_across_polls(
    settings: Settings, database_dsn: str
) -> None:
    """Their partition key is the poll's time, so the day index cannot see a repeat;
    ``rest_record_keys`` does. Items with a source time need no key row."""
    first = datetime.now(UTC)

    def poll(at: datetime, n: int, *, timed: bool = False) -> Record:
        return evolve_record(
            record(n),
            source="rest",
            timestamp=first - timedelta(seconds=1) if timed else at,
            received_at=at,
            source_id=str(n),
            status_code=200,
        )

    async with Database.open(settings) as db:
        stored, dup = await db.run(insert_records, [poll(first, 1), poll(first, 2, timed=True)])
        assert (len(stored), dup) == (2, 0)
        later = first + timedelta(seconds=1)
        stored, dup = await db.run(
            insert_records, [poll(later, 1), poll(later, 2, timed=True), poll(later, 3)]
        )
        assert ([s.record.dedup_key for s in stored], dup) == (["t:BTC-USDT:3"], 2)
        # A retry of a write whose COMMIT reply was lost: its own rows count as stored.
        stored, dup = await db.run(insert_records, [poll(later, 3)], recover=True)
        assert ([s.record.dedup_key for s in stored], dup) == (["t:BTC-USDT:3"], 0)
    assert [r[1] for r in where(database_dsn, "api_connector_data")] == [
        "t:BTC-USDT:1",
        "t:BTC-USDT:2",
        "t:BTC-USDT:3",
    ]
    with psycopg.connect(database_dsn) as conn:
        keys = conn.execute("SELECT dedup_key FROM rest_record_keys ORDER BY 1").fetchall()
    assert keys == [("t:BTC-USDT:1",), ("t:BTC-USDT:3",)]


async def test_retention_drops_whole_expired_days_and_spares_longer_policies(
    settings: Settings, database_dsn: str
) -> None:
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    gone_day, mixed_day = today - timedelta(days=40), today - timedelta(days=35)

    make = made

    async with Database.open(settings) as db:
        await db.run(insert_connector, KEEPER)
        rows = [make(n, "conn_a", gone_day) for n in range(100)]
        rows += [make(200 + n, "conn_a", mixed_day) for n in range(7)]
        rows += [make(300 + n, "conn_keep", mixed_day) for n in range(3)]
        rows += [make(400 + n, "conn_a", today) for n in range(5)]
        stored, _ = await db.run(insert_records, rows)
        highest_gone = max(s.id for s in stored if s.record.timestamp == gone_day)
        retention = Retention(db, default_days=30, batch=4)
        deleted = await retention.run_once()
    gone = partitions.name("websocket_messages", gone_day.date())
    assert retention.dropped == [gone]
    assert deleted == 7  # conn_a's rows of the day it shares with conn_keep, row by row
    with psycopg.connect(database_dsn) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (gone,)).fetchone() == (None,)
        left = conn.execute(
            "SELECT connector_id, count(*) FROM websocket_messages GROUP BY 1 ORDER BY 1"
        ).fetchall()
        floor = conn.execute("SELECT id FROM record_floor").fetchone()
        ahead = partitions.name("websocket_messages", (today + timedelta(days=2)).date())
        assert conn.execute("SELECT to_regclass(%s) IS NOT NULL", (ahead,)).fetchone() == (True,)
    assert left == [("conn_a", 5), ("conn_keep", 3)]
    assert floor is not None
    assert floor[0] >= highest_gone


# --- upgrading a database from before partitions ----------------------------------

OLD_ROWS = 60_000


def _old_database(dsn: str) -> None:
    """Schema version 7 (unpartitioned record tables) with rows over 42 days, a tenth of
    them saved without a connector, and some REST rows."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
            " description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, description, statements in MIGRATIONS[:7]:
            conn.execute(statements.encode())
            conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, description))
        conn.execute(
            "INSERT INTO websocket_messages (connector_id, exchange, instrument, price, size,"
            ' side, message_type, "timestamp", received_at, data, dedup_key, source_id)'
            " SELECT CASE WHEN g %% 10 = 0 THEN NULL ELSE 'conn_' || g %% 3 END, 'okx',"
            " 'BTC-USDT', g * 0.01, 1, 'buy', 'trade',"
            " timestamptz '2026-10-01 00:00+00' + g * interval '1 minute', now(),"
            " jsonb_build_object('n', g), 't:BTC-USDT:' || g, g::text"
            " FROM generate_series(1, %s) g",
            (OLD_ROWS,),
        )
        conn.execute(
            "INSERT INTO api_connector_data (connector_id, exchange, message_type,"
            ' "timestamp", received_at, data, dedup_key, status_code)'
            " SELECT 'conn_rest', 'custom', 'ticker', now() - g * interval '1 hour', now(),"
            " '{}', 'h:' || g, 200 FROM generate_series(1, 500) g"
        )


def _fingerprint(dsn: str, table: str) -> tuple[int, str]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM {table} t"
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def _migrate(dsn: str, tmp_path: Path, batch: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "POSTGRES_DSN": dsn,
        "SLUICE_DATA_DIR": str(tmp_path / "data"),
        "ENCRYPTION_KEY": TEST_KEY,
        "SLUICE_MIGRATE_BATCH": str(batch),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", "migrate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _moved(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('websocket_messages_unpartitioned')").fetchone() == (
            None,
        ):
            return 0
        row = conn.execute("SELECT count(*) FROM websocket_messages").fetchone()
    return row[0] if row else 0


def test_an_old_database_upgrades_in_place_and_a_kill_9_mid_move_loses_nothing(
    database_dsn: str, tmp_path: Path
) -> None:
    _old_database(database_dsn)
    before = {t: _fingerprint(database_dsn, t) for t in partitions.RECORD_TABLES}

    first = _migrate(database_dsn, tmp_path, batch=100)
    deadline = time.monotonic() + 60
    while (moved := _moved(database_dsn)) < 5_000:  # some batches committed
        assert first.poll() is None, "the move finished before it could be interrupted"
        assert time.monotonic() < deadline, "nothing moved within 60 s"
        time.sleep(0.02)
    first.kill()
    first.communicate()
    assert 0 < moved < OLD_ROWS

    second = _migrate(database_dsn, tmp_path, batch=5_000)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err.decode()
    assert b"records into day partitions" in out
    assert {t: _fingerprint(database_dsn, t) for t in partitions.RECORD_TABLES} == before
    with psycopg.connect(database_dsn) as conn:
        assert conn.execute(
            "SELECT to_regclass('websocket_messages_unpartitioned'),"
            " to_regclass('api_connector_data_unpartitioned')"
        ).fetchone() == (None, None)
        days = conn.execute("SELECT count(DISTINCT tableoid) FROM websocket_messages").fetchone()
        version = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    assert days == (42,)  # 60,000 minutes from October 1st: 42 days
    assert version == (MIGRATIONS[-1][0],)


async def test_table_sizes_are_estimated_past_a_million_rows(
    settings: Settings, database_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exact count of a big partitioned table takes seconds; past the limit the
    planner's estimate over every partition answers instead."""
    async with Database.open(settings) as db:
        await db.run(insert_records, [record(n) for n in range(30)])
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            conn.execute("ANALYZE websocket_messages")
            conn.execute("DELETE FROM websocket_messages WHERE dedup_key = 't:BTC-USDT:0'")
        assert (await db.run(queries.table_counts))["websocket_messages"] == 29  # exact
        monkeypatch.setattr(queries, "EXACT_COUNT_UP_TO", 10)
        assert (await db.run(queries.table_counts))["websocket_messages"] == 30  # estimate


def test_a_busy_record_table_does_not_stop_a_start(database_dsn: str) -> None:
    """Creating the days ahead locks the table; behind a long reader (another instance's
    CSV export) a start gives up after the lock timeout instead of failing or queueing
    every query behind it, and leaves the day to the retention pass."""
    with psycopg.connect(database_dsn) as conn:
        migrations.migrate(conn)
        ahead = partitions.name("websocket_messages", datetime.now(UTC).date() + timedelta(2))
        conn.execute(f"DROP TABLE {ahead}")
        conn.commit()
        with psycopg.connect(database_dsn) as reader:
            reader.execute("SELECT count(*) FROM websocket_messages")  # holds its lock
            started = time.monotonic()
            assert migrations.migrate(conn) == migrations.Migrated([], 0)
            assert time.monotonic() - started < 10
            reader.rollback()
        assert conn.execute("SELECT to_regclass(%s)", (ahead,)).fetchone() == (None,)
        migrations.migrate(conn)  # the table free again: the day is made
        assert conn.execute("SELECT to_regclass(%s)", (ahead,)).fetchone() != (None,)
