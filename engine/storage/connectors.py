"""SQL for connector definitions (``api_connectors``) and their status
(``connector_status``). Plain functions taking a connection; run them through
:meth:`Database.run`."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ..models import ConnectorSpec, ConnectorStatus, ErrorEvent, GapEvent, Rejected

Conn = psycopg.Connection[Any]

MAX_REJECTED_RAW = 64 * 1024

_COLUMNS = (
    "connector_id, name, api_url, protocol, exchange, http_method, headers, query_params,"
    " auth_type, polling_interval, subscribe_messages, desired_state, created_at, updated_at,"
    " ping_interval, pong_timeout, stale_timeout, app_ping, app_ping_interval, field_mapping,"
    " retention_days, credentials, auth_options, request_body, secret_names"
)


def _spec(row: dict[str, Any]) -> ConnectorSpec:
    return ConnectorSpec(**row)


# The columns a client defines, in this order, for INSERT and UPDATE alike.
_DEFINITION = (
    "name, api_url, protocol, exchange, http_method, headers, query_params, auth_type,"
    " polling_interval, subscribe_messages, ping_interval, pong_timeout, stale_timeout,"
    " app_ping, app_ping_interval, field_mapping, retention_days, credentials, auth_options,"
    " request_body, secret_names"
)


def _definition(spec: ConnectorSpec) -> tuple[Any, ...]:
    def optional_json(value: Any) -> Jsonb | None:
        return None if value is None else Jsonb(value)

    return (
        spec.name,
        spec.api_url,
        spec.protocol,
        spec.exchange,
        spec.http_method,
        Jsonb(spec.headers),
        Jsonb(spec.query_params),
        spec.auth_type,
        spec.polling_interval,
        Jsonb(spec.subscribe_messages),
        spec.ping_interval,
        spec.pong_timeout,
        spec.stale_timeout,
        spec.app_ping,
        spec.app_ping_interval,
        optional_json(spec.field_mapping),
        spec.retention_days,
        Jsonb(spec.credentials),
        Jsonb(spec.auth_options),
        optional_json(spec.request_body),
        Jsonb(spec.secret_names),
    )


def insert_connector(conn: Conn, spec: ConnectorSpec) -> ConnectorSpec:
    cur = conn.cursor(row_factory=dict_row)
    values = _definition(spec)
    cur.execute(
        f"INSERT INTO api_connectors (connector_id, desired_state, {_DEFINITION})"
        f" VALUES (%s, %s, {', '.join(['%s'] * len(values))}) RETURNING {_COLUMNS}",
        (spec.connector_id, spec.desired_state, *values),
    )
    row = cur.fetchone()
    assert row is not None
    cur.execute(
        "INSERT INTO connector_status (connector_id, status) VALUES (%s, 'inactive')",
        (spec.connector_id,),
    )
    return _spec(row)


def get_connector(conn: Conn, connector_id: str) -> ConnectorSpec | None:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(f"SELECT {_COLUMNS} FROM api_connectors WHERE connector_id = %s", (connector_id,))
    row = cur.fetchone()
    return _spec(row) if row else None


def list_connectors(conn: Conn) -> list[ConnectorSpec]:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(f"SELECT {_COLUMNS} FROM api_connectors ORDER BY created_at, connector_id")
    return [_spec(row) for row in cur.fetchall()]


def set_desired_state(conn: Conn, connector_id: str, state: str) -> bool:
    cur = conn.execute(
        "UPDATE api_connectors SET desired_state = %s WHERE connector_id = %s",
        (state, connector_id),
    )
    return cur.rowcount == 1


def save_statuses(conn: Conn, statuses: list[ConnectorStatus]) -> None:
    """Upsert the given statuses; rows of deleted connectors are skipped."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO connector_status (connector_id, status, messages_received,"
            " records_stored, messages_rejected, control_messages, errors, reconnects,"
            " last_message_at, last_error, started_at, messages_gap, records_duplicate,"
            " rejected_by_category, requests, skipped_ticks, last_status_code, instance_id,"
            " updated_at)"
            " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " now()"
            " WHERE EXISTS (SELECT 1 FROM api_connectors WHERE connector_id = %s)"
            " ON CONFLICT (connector_id) DO UPDATE SET status = excluded.status,"
            " messages_received = excluded.messages_received,"
            " records_stored = excluded.records_stored,"
            " messages_rejected = excluded.messages_rejected,"
            " control_messages = excluded.control_messages, errors = excluded.errors,"
            " reconnects = excluded.reconnects, last_message_at = excluded.last_message_at,"
            " last_error = excluded.last_error, started_at = excluded.started_at,"
            " messages_gap = excluded.messages_gap,"
            " records_duplicate = excluded.records_duplicate,"
            " rejected_by_category = excluded.rejected_by_category,"
            " requests = excluded.requests, skipped_ticks = excluded.skipped_ticks,"
            " last_status_code = excluded.last_status_code,"
            " instance_id = excluded.instance_id, updated_at = now()",
            [
                (
                    s.connector_id,
                    s.status,
                    s.messages_received,
                    s.records_stored,
                    s.messages_rejected,
                    s.control_messages,
                    s.errors,
                    s.reconnects,
                    s.last_message_at,
                    s.last_error,
                    s.started_at,
                    s.messages_gap,
                    s.records_duplicate,
                    Jsonb(s.rejected_by_category),
                    s.requests,
                    s.skipped_ticks,
                    s.last_status_code,
                    s.instance_id,
                    s.connector_id,
                )
                for s in statuses
            ],
        )


_STATUS_SELECT = (
    "SELECT connector_id, status, messages_received, records_stored, messages_rejected,"
    " control_messages, errors, reconnects, last_message_at, last_error, started_at,"
    " messages_gap, records_duplicate, rejected_by_category, requests, skipped_ticks,"
    " last_status_code, instance_id, updated_at FROM connector_status"
)


def get_status(conn: Conn, connector_id: str) -> ConnectorStatus | None:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(_STATUS_SELECT + " WHERE connector_id = %s", (connector_id,))
    row = cur.fetchone()
    return ConnectorStatus(**row) if row else None


def list_statuses(conn: Conn) -> list[ConnectorStatus]:
    """Every connector's last persisted status (one query, for a table of them all)."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(_STATUS_SELECT + " WHERE connector_id IN (SELECT connector_id FROM api_connectors)")
    return [ConnectorStatus(**row) for row in cur.fetchall()]


def status_names(conn: Conn) -> dict[str, str]:
    """Each connector's last persisted status word."""
    rows = conn.execute("SELECT connector_id, status FROM connector_status").fetchall()
    return {row[0]: row[1] for row in rows}


def insert_events(
    conn: Conn, gaps: list[GapEvent], errors: list[ErrorEvent], rejects: list[Rejected]
) -> None:
    """Store gap records, connector errors and dead letters in one transaction."""
    with conn.cursor() as cur:
        if gaps:
            cur.executemany(
                "INSERT INTO connector_gaps (connector_id, gap_from, gap_to, cause, messages_lost)"
                " VALUES (%s, %s, %s, %s, %s)",
                [(g.connector_id, g.gap_from, g.gap_to, g.cause, g.messages_lost) for g in gaps],
            )
        if errors:
            cur.executemany(
                "INSERT INTO connector_errors (connector_id, occurred_at, kind, message)"
                " VALUES (%s, %s, %s, %s)",
                [(e.connector_id, e.occurred_at, e.kind, e.message) for e in errors],
            )
        if rejects:
            cur.executemany(
                "INSERT INTO rejected_messages (connector_id, received_at, category, reason, raw)"
                " VALUES (%s, %s, %s, %s, %s)",
                [
                    (
                        r.connector_id,
                        r.received_at,
                        r.category,
                        r.reason,
                        r.raw[:MAX_REJECTED_RAW].decode("utf-8", "replace").replace("\x00", ""),
                    )
                    for r in rejects
                ],
            )


def _newest(
    conn: Conn, table: str, columns: tuple[str, ...], connector_id: str, limit: int
) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        sql.SQL("SELECT {} FROM {} WHERE connector_id = %s ORDER BY id DESC LIMIT %s").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table)
        ),
        (connector_id, limit),
    )
    return cur.fetchall()


def list_gaps(conn: Conn, connector_id: str, limit: int) -> list[dict[str, Any]]:
    columns = ("id", "connector_id", "gap_from", "gap_to", "cause", "messages_lost", "created_at")
    return _newest(conn, "connector_gaps", columns, connector_id, limit)


def list_errors(conn: Conn, connector_id: str, limit: int) -> list[dict[str, Any]]:
    columns = ("id", "connector_id", "occurred_at", "kind", "message")
    return _newest(conn, "connector_errors", columns, connector_id, limit)


def list_rejected(conn: Conn, connector_id: str, limit: int) -> list[dict[str, Any]]:
    columns = ("id", "connector_id", "received_at", "category", "reason", "raw")
    return _newest(conn, "rejected_messages", columns, connector_id, limit)


def update_connector(conn: Conn, spec: ConnectorSpec) -> ConnectorSpec:
    """Replace a connector's definition (every column but id, desired state and created_at)."""
    cur = conn.cursor(row_factory=dict_row)
    assignments = ", ".join(f"{column.strip()} = %s" for column in _DEFINITION.split(","))
    cur.execute(
        f"UPDATE api_connectors SET {assignments}, updated_at = now()"
        f" WHERE connector_id = %s RETURNING {_COLUMNS}",
        (*_definition(spec), spec.connector_id),
    )
    row = cur.fetchone()
    assert row is not None
    return _spec(row)


def delete_connector(conn: Conn, connector_id: str, purge_data: bool) -> bool:
    """Remove a connector (its status row goes with it); with ``purge_data`` also its
    records, gaps, errors and dead letters."""
    cur = conn.execute("DELETE FROM api_connectors WHERE connector_id = %s", (connector_id,))
    if cur.rowcount == 0:
        return False
    if purge_data:
        for table in (
            "websocket_messages",
            "api_connector_data",
            "connector_gaps",
            "connector_errors",
            "rejected_messages",
            "rest_record_keys",
        ):
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE connector_id = %s").format(sql.Identifier(table)),
                (connector_id,),
            )
    return True


def all_secrets(conn: Conn) -> list[ConnectorSpec]:
    """Every connector, for key rotation (locked until the transaction ends)."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(f"SELECT {_COLUMNS} FROM api_connectors ORDER BY connector_id FOR UPDATE")
    return [_spec(row) for row in cur.fetchall()]


def save_secrets(conn: Conn, spec: ConnectorSpec) -> None:
    conn.execute(
        "UPDATE api_connectors SET credentials = %s, headers = %s, query_params = %s"
        " WHERE connector_id = %s",
        (Jsonb(spec.credentials), Jsonb(spec.headers), Jsonb(spec.query_params), spec.connector_id),
    )
