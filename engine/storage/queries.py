"""Read queries behind the data endpoints. Sort columns come from an allow-list and
every value is a bound parameter."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

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
    "data",  # selected as JSON text, passed through to responses unparsed
)
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
        cols=sql.SQL(", ").join(
            sql.SQL("data::text AS data") if c == "data" else sql.Identifier(c)
            for c in RECORD_COLUMNS
        ),
        table=sql.Identifier(table),
        sort=sql.Identifier(sort_by),
        dir=direction,
    )
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(query, (connector_id, limit, skip))
    return cur.fetchall()


def table_counts(conn: Conn) -> dict[str, int]:
    counts = {}
    for name in TABLE_NAMES:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
        ).fetchone()
        counts[name] = int(row[0]) if row else 0
    return counts


def server_info(conn: Conn) -> dict[str, Any]:
    row = conn.execute("SELECT current_database(), current_setting('server_version')").fetchone()
    assert row is not None
    return {"database": row[0], "version": row[1]}
