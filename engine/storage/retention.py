"""SQL for retention: which rows are old, deleted a bounded batch at a time."""

from __future__ import annotations

from typing import Any

import attrs
import psycopg
from psycopg import sql

Conn = psycopg.Connection[Any]

RECORD_TABLES = ("websocket_messages", "api_connector_data")
JOURNAL_TABLES = {
    "connector_gaps": "gap_to",
    "connector_errors": "occurred_at",
    "rejected_messages": "received_at",
    "websocket_batches": "received_at",
}


@attrs.frozen
class Job:
    """Delete rows of ``table`` older than ``days`` in ``time_column``; ``connector_id``
    narrows it to one connector, ``exclude_own`` skips connectors with their own policy."""

    table: str
    time_column: str
    days: int
    connector_id: str | None = None
    exclude_own: bool = False


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
        jobs += [Job(t, "timestamp", default_days, exclude_own=True) for t in RECORD_TABLES]
        jobs += [Job(t, column, default_days) for t, column in JOURNAL_TABLES.items()]
    return jobs


def delete_batch(conn: Conn, job: Job, limit: int) -> int:
    conditions: list[sql.Composable] = [
        sql.SQL("{} < now() - make_interval(days => %s)").format(sql.Identifier(job.time_column))
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
    query = sql.SQL(
        "WITH gone AS (DELETE FROM {table} WHERE id IN"
        " (SELECT id FROM {table} WHERE {cond} LIMIT %s) RETURNING id)"
        " SELECT count(*), max(id) FROM gone"
    ).format(table=sql.Identifier(job.table), cond=sql.SQL(" AND ").join(conditions))
    row = conn.execute(query, [*params, limit]).fetchone()
    count, highest = (int(row[0]), row[1]) if row else (0, None)
    if highest is not None and job.table in RECORD_TABLES:
        # Realtime resume: every record above the floor is still here.
        conn.execute("UPDATE record_floor SET id = greatest(id, %s)", (highest,))
    return count
