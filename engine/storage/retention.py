"""SQL for retention: which rows are old, deleted a bounded batch at a time (the record
tables' whole days are dropped as partitions instead, see :mod:`.partitions`)."""

from __future__ import annotations

from typing import Any

import attrs
import psycopg
from psycopg import sql

from .partitions import RECORD_TABLES

Conn = psycopg.Connection[Any]

JOURNAL_TABLES = {
    "connector_gaps": "gap_to",
    "connector_errors": "occurred_at",
    "rejected_messages": "received_at",
    "websocket_batches": "received_at",
    "rest_record_keys": "seen_at",
}


@attrs.frozen
class Job:
    """Delete rows of ``table`` older than ``days`` in ``time_column``; ``connector_id``
    narrows it to one connector, ``exclude_own`` skips connectors with their own policy,
    ``whole_days`` only takes rows of UTC days wholly past the limit (the default policy
    on the record tables, whose days are otherwise dropped as whole partitions)."""

    table: str
    time_column: str
    days: int
    connector_id: str | None = None
    exclude_own: bool = False
    whole_days: bool = False


def plan(conn: Conn, default_days: int | None) -> list[Job]:
    own = conn.execute(
        "SELECT connector_id, retention_days FROM api_connectors WHERE retention_days IS NOT NULL"
    ).fetchall()
    jobs = [
        Job(table, "timestamp", int(days), connector_id=cid)
        for cid, days in own
        for table in RECORD_TABLES
    ]
    if default_days:
        jobs += [
            Job(t, "timestamp", default_days, exclude_own=True, whole_days=True)
            for t in RECORD_TABLES
        ]
        jobs += [Job(t, column, default_days) for t, column in JOURNAL_TABLES.items()]
    return jobs


def kept_longer(conn: Conn, default_days: int) -> list[str]:
    """Connectors whose own retention is longer than ``default_days``: a day partition
    holding their records cannot be dropped whole."""
    rows = conn.execute(
        "SELECT connector_id FROM api_connectors WHERE retention_days > %s", (default_days,)
    ).fetchall()
    return [row[0] for row in rows]


# Where a table's rows are named for a bounded delete: the record tables by primary key
# (with the partition key, so each id is looked for in one partition only).
_KEYS = {
    "rest_record_keys": "connector_id, dedup_key",
    **{t: 'id, "timestamp"' for t in RECORD_TABLES},
}


def delete_batch(conn: Conn, job: Job, limit: int) -> int:
    limit_at = sql.SQL("now() - make_interval(days => %s)")
    if job.whole_days:
        limit_at = sql.SQL("date_trunc('day', now() - make_interval(days => %s), 'UTC')")
    conditions: list[sql.Composable] = [
        sql.SQL("{} < ").format(sql.Identifier(job.time_column)) + limit_at
    ]
    params: list[Any] = [job.days]
    if job.connector_id is not None:
        conditions.append(sql.SQL("connector_id = %s"))
        params.append(job.connector_id)
    if job.exclude_own:
        conditions.append(
            sql.SQL(
                "(connector_id IS NULL OR connector_id NOT IN"
                " (SELECT connector_id FROM api_connectors WHERE retention_days IS NOT NULL))"
            )
        )
    cond = sql.SQL(" AND ").join(conditions)
    key = sql.SQL(_KEYS.get(job.table, "id"))
    record = job.table in RECORD_TABLES
    query = sql.SQL(
        # The limit is repeated outside the subquery so the planner prunes partitions.
        "WITH gone AS (DELETE FROM {table} WHERE ({key}) IN"
        " (SELECT {key} FROM {table} WHERE {cond} LIMIT %s){outer} RETURNING {returned})"
        " SELECT count(*), {highest} FROM gone"
    ).format(
        table=sql.Identifier(job.table),
        key=key,
        cond=cond,
        outer=sql.SQL(" AND {} < ").format(sql.Identifier(job.time_column)) + limit_at
        if record
        else sql.SQL(""),
        returned=sql.SQL("id" if record else "1 AS one"),
        highest=sql.SQL("max(id)" if record else "NULL"),
    )
    row = conn.execute(query, [*params, limit, *([job.days] if record else [])]).fetchone()
    count, highest = (int(row[0]), row[1]) if row else (0, None)
    if highest is not None and record:
        # Realtime resume: every record above the floor is still here.
        conn.execute("UPDATE record_floor SET id = greatest(id, %s)", (highest,))
    return count
