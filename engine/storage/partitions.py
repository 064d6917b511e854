"""Day partitions of the record tables (``websocket_messages``, ``api_connector_data``).

Both are partitioned by range of ``"timestamp"``, the source's own time of the record
(the receive time when the source gives none), one partition per UTC day, named
``<table>_pYYYYMMDD``. The source's time is the partition key because a record sent again
(a replay after a reconnect, a retried batch, the spool written back) carries the same
time, so it lands in the same partition, where the unique index that includes the key
catches it. Records with a source id but no source time get the receive time, which
differs on every arrival: for REST pollers, which see the same items poll after poll,
``rest_record_keys`` holds those keys (see :mod:`.records`).

The retention actor creates partitions ahead of time (:func:`ensure_ahead`); a record
outside them (a backfill of old data, a source clock far off) makes its write raise
:class:`Missing`, and the day is created on demand (:func:`create`) before the write runs
again. Retention drops whole days (:func:`drop`): detached
concurrently, so writers are not blocked, then dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

Conn = psycopg.Connection[Any]

RECORD_TABLES = ("websocket_messages", "api_connector_data")
AHEAD_DAYS = 2  # partitions exist from yesterday to this many days after today
LOCK_TIMEOUT_MS = 2000
_NAME = re.compile(r"_p(\d{8})$")


def name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def bounds(day: date) -> tuple[str, str]:
    """The range of ``day``'s partition, as ``FOR VALUES FROM … TO …`` takes it."""
    return f"{day.isoformat()} 00:00:00+00", f"{(day + timedelta(days=1)).isoformat()} 00:00:00+00"


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


class Missing(Exception):
    """A write needs day partitions that do not exist yet. Raised out of the write's
    transaction, which is rolled back: :class:`~.database.Database` creates the days in a
    short transaction of their own and runs the write again, so the lock that creating a
    partition takes on its table is never held while a batch is written."""

    def __init__(self, table: str, days: set[date]) -> None:
        super().__init__(f"{table}: no partition for {', '.join(map(str, sorted(days)))}")
        self.table = table
        self.days = days


def is_missing(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL refusing a row no partition accepts."""
    return isinstance(exc, psycopg.errors.CheckViolation) and "no partition of relation" in str(exc)


def create(conn: Conn, table: str, days: Iterable[date]) -> list[str]:
    """Create the partitions of ``table`` for ``days`` that do not exist yet, in the
    current transaction; returns their names. Safe against other processes creating the
    same day at once: each day is created under its own advisory lock."""
    if table not in RECORD_TABLES:
        raise ValueError("not a record table")
    created = []
    # Creating a partition locks its table. Waiting long for that lock (behind a long
    # read, a CSV export) would queue every other query behind the wait: give up
    # instead (LockNotAvailable: the writer retries, the retention pass comes again).
    conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
    for day in sorted(set(days)):
        partition = name(table, day)
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (partition,))
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (partition,)).fetchone()
        if exists and exists[0]:
            continue
        low, high = bounds(day)
        conn.execute(
            sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(partition),
                sql.Identifier(table),
                sql.Literal(low),
                sql.Literal(high),
            )
        )
        created.append(partition)
    return created


def ensure_ahead(conn: Conn) -> list[str]:
    """Partitions from yesterday to :data:`AHEAD_DAYS` after today (the database's clock),
    for both record tables."""
    row = conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()
    assert row is not None
    today: date = row[0]
    days = [today + timedelta(days=d) for d in range(-1, AHEAD_DAYS + 1)]
    return [p for table in RECORD_TABLES for p in create(conn, table, days)]


def attached(conn: Conn, table: str) -> dict[str, date]:
    """The day partitions of ``table``: name → day."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass",
        (table,),
    ).fetchall()
    return {
        row[0]: datetime.strptime(m.group(1), "%Y%m%d").date()
        for row in rows
        if (m := _NAME.search(row[0]))
    }


def expired(conn: Conn, table: str, days: int, keep: Iterable[str]) -> list[str]:
    """Partitions of ``table`` whose whole day is older than ``days`` days and that hold
    no record of the connectors in ``keep`` (their own retention is longer)."""
    row = conn.execute(
        "SELECT ((now() - make_interval(days => %s)) AT TIME ZONE 'UTC')::date", (days,)
    ).fetchone()
    assert row is not None
    cutoff: date = row[0]  # a day wholly before this is expired
    keep = list(keep)
    found = []
    for partition, day in sorted(attached(conn, table).items(), key=lambda kv: kv[1]):
        if day >= cutoff:
            continue
        if keep:
            held = conn.execute(
                sql.SQL("SELECT 1 FROM {} WHERE connector_id = ANY(%s) LIMIT 1").format(
                    sql.Identifier(partition)
                ),
                (keep,),
            ).fetchone()
            if held:
                continue
        found.append(partition)
    return found


def drop(dsn: str, table: str, partition: str) -> int | None:
    """Drop one partition without blocking writers: raise the realtime resume floor to
    its highest id, detach it concurrently (two transactions of its own, so on a fresh
    autocommit connection), then drop it. Returns that highest id (``None`` if empty).

    A detach interrupted earlier (a crash, a cancelled statement) left the partition
    "pending detach"; it is finished with ``FINALIZE``."""
    if table not in RECORD_TABLES or not _NAME.search(partition):
        raise ValueError("not a record partition")
    ident = sql.Identifier(partition)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(sql.SQL("SELECT max(id) FROM {}").format(ident)).fetchone()
        highest = row[0] if row else None
        if highest is not None:
            conn.execute("UPDATE record_floor SET id = greatest(id, %s)", (highest,))
        detach = sql.SQL("ALTER TABLE {} DETACH PARTITION {} {}")
        try:
            conn.execute(detach.format(sql.Identifier(table), ident, sql.SQL("CONCURRENTLY")))
        except psycopg.errors.ObjectNotInPrerequisiteState:
            conn.execute(detach.format(sql.Identifier(table), ident, sql.SQL("FINALIZE")))
        conn.execute(sql.SQL("DROP TABLE {}").format(ident))
    return highest
