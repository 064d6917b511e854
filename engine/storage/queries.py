"""Read queries behind the data endpoints. Sort columns come from an allow-list and
every value is a bound parameter."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

Conn = psycopg.Connection[Any]

RECORD_COLUMNS = (
    "id",
    "connector_id",
    "timestamp",
    "received_at",
    "exchange",
    "instrument",
    "price",
    "size",
    "side",
    "message_type",
    "bid_price",
    "bid_size",
    "ask_price",
    "ask_size",
    "source_id",
    "session_id",
    "data",  # selected as JSON text, passed through to responses unparsed
)
# Columns only one table has: the REST response a record came from; what a saved message
# arrived with.
TABLE_COLUMNS = {
    "api_connector_data": ("status_code", "response_time_ms"),
    "websocket_messages": ("batch_id", "message_number", "format"),
}
SORTABLE = frozenset({"id", "timestamp", "received_at", "price", "size", "instrument"})
TABLE_NAMES = (
    "api_connectors",
    "connector_status",
    "api_connector_data",
    "websocket_messages",
    "websocket_batches",
)


def connector_records(
    conn: Conn,
    *,
    table: str,
    connector_id: str,
    limit: int,
    skip: int,
    sort_by: str,
    descending: bool,
) -> list[dict[str, Any]]:
    if sort_by not in SORTABLE or table not in ("websocket_messages", "api_connector_data"):
        raise ValueError("sort column or table not allowed")  # callers validate first
    direction = sql.SQL("DESC" if descending else "ASC")
    query = sql.SQL(
        "SELECT {cols} FROM {table} WHERE connector_id = %s"
        " ORDER BY {sort} {dir}, id {dir} LIMIT %s OFFSET %s"
    ).format(
        cols=_record_columns(RECORD_COLUMNS + TABLE_COLUMNS[table]),
        table=sql.Identifier(table),
        sort=sql.Identifier(sort_by),
        dir=direction,
    )
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(query, (connector_id, limit, skip))
    return cur.fetchall()


def _record_columns(columns: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("data::text AS data") if c == "data" else sql.Identifier(c) for c in columns
    )


EXACT_COUNT_UP_TO = 1_000_000
_ESTIMATE = """
SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_class c
WHERE c.relkind = 'r' AND (c.oid = %(t)s::regclass
   OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = %(t)s::regclass))
"""


def table_counts(conn: Conn) -> dict[str, int]:
    """Rows per table: exact up to :data:`EXACT_COUNT_UP_TO`, above it the planner's
    estimate (kept by autovacuum's ANALYZE, over every partition): counting 50 million
    rows takes seconds, and the console asks every few seconds."""
    counts = {}
    for name in TABLE_NAMES:
        estimate = conn.execute(_ESTIMATE, {"t": name}).fetchone()
        if estimate and estimate[0] > EXACT_COUNT_UP_TO:
            counts[name] = int(estimate[0])
            continue
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
        ).fetchone()
        counts[name] = int(row[0]) if row else 0
    return counts


def server_info(conn: Conn) -> dict[str, Any]:
    row = conn.execute("SELECT current_database(), current_setting('server_version')").fetchone()
    assert row is not None
    return {"database": row[0], "version": row[1]}


# --- /api/websocket/data ------------------------------------------------------------

MESSAGE_SORTABLE = frozenset(
    {"id", "timestamp", "received_at", "price", "size", "instrument", "exchange"}
)
BATCH_SORTABLE = frozenset({"id", "received_at", "message_count", "exchange"})
BATCH_COLUMNS = ("id", "connector_id", "exchange", "message_count", "metrics", "received_at")


@attrs.frozen
class DataFilter:
    """Filters of ``GET /api/websocket/data`` (all optional, combined with AND)."""

    exchange: str | None = None
    instrument: str | None = None
    connector_id: str | None = None
    time_from: datetime | None = None
    time_to: datetime | None = None
    after_id: int | None = None
    descending: bool = True


def _where(f: DataFilter, time_column: str, *, batches: bool) -> tuple[sql.Composable, list[Any]]:
    parts: list[sql.Composable] = []
    params: list[Any] = []
    for column, value in (
        ("exchange", f.exchange),
        ("instrument", None if batches else f.instrument),
        ("connector_id", f.connector_id),
    ):
        if value is not None:
            parts.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if f.time_from is not None:
        parts.append(sql.SQL("{} >= %s").format(sql.Identifier(time_column)))
        params.append(f.time_from)
    if f.time_to is not None:
        parts.append(sql.SQL("{} < %s").format(sql.Identifier(time_column)))
        params.append(f.time_to)
    if f.after_id is not None:
        parts.append(sql.SQL("id < %s" if f.descending else "id > %s"))
        params.append(f.after_id)
    if not parts:
        return sql.SQL(""), params
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), params


def data_query(
    f: DataFilter, *, batches: bool, sort_by: str, limit: int, skip: int
) -> tuple[sql.Composed, list[Any]]:
    """The SELECT for one page of messages or batches, sort column allow-listed."""
    allowed = BATCH_SORTABLE if batches else MESSAGE_SORTABLE
    if sort_by not in allowed:
        raise ValueError("sort column not allowed")  # callers validate first
    if batches:
        table, time_column = "websocket_batches", "received_at"
        cols: sql.Composable = sql.SQL(", ").join(
            sql.SQL("metrics::text AS metrics") if c == "metrics" else sql.Identifier(c)
            for c in BATCH_COLUMNS
        )
    else:
        table, time_column = "websocket_messages", "timestamp"
        cols = _record_columns(RECORD_COLUMNS + TABLE_COLUMNS[table])
    where, params = _where(f, time_column, batches=batches)
    direction = sql.SQL("DESC" if f.descending else "ASC")
    query = sql.SQL(
        "SELECT {cols} FROM {table}{where} ORDER BY {sort} {dir}, id {dir} LIMIT %s OFFSET %s"
    ).format(
        cols=cols,
        table=sql.Identifier(table),
        where=where,
        sort=sql.Identifier(sort_by),
        dir=direction,
    )
    return query, [*params, limit, skip]


def count_data(conn: Conn, f: DataFilter, *, batches: bool) -> int:
    table, time_column = (
        ("websocket_batches", "received_at") if batches else ("websocket_messages", "timestamp")
    )
    where, params = _where(f, time_column, batches=batches)
    query = sql.SQL("SELECT count(*) FROM {}{}").format(sql.Identifier(table), where)
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


def insert_batch(
    conn: Conn, connector_id: str | None, exchange: str, count: int, metrics: dict[str, Any]
) -> int:
    row = conn.execute(
        "INSERT INTO websocket_batches (connector_id, exchange, message_count, metrics)"
        " VALUES (%s, %s, %s, %s) RETURNING id",
        (connector_id, exchange, count, Jsonb(metrics)),
    ).fetchone()
    assert row is not None
    return int(row[0])
