"""SQL for connector definitions (``api_connectors``) and their status
(``connector_status``). Plain functions taking a connection; run them through
:meth:`Database.run`."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ..models import ConnectorSpec, ConnectorStatus, ErrorEvent, GapEvent, Rejected

Conn = psycopg.Connection[Any]

MAX_REJECTED_RAW = 64 * 1024

_COLUMNS = (
    "connector_id, name, api_url, protocol, exchange, http_method, headers, query_params,"
    " auth_type, polling_interval, subscribe_messages, desired_state, created_at, updated_at,"
    " ping_interval, pong_timeout, stale_timeout, app_ping, app_ping_interval, field_mapping,"
    " retention_days"
)


def _spec(row: dict[str, Any]) -> ConnectorSpec:
    return ConnectorSpec(**row)


def insert_connector(conn: Conn, spec: ConnectorSpec) -> ConnectorSpec:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        f"INSERT INTO api_connectors ({_COLUMNS})"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), now(),"
        " %s, %s, %s, %s, %s, %s, %s)"
        f" RETURNING {_COLUMNS}",
        (
            spec.connector_id,
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
            spec.desired_state,
            spec.ping_interval,
            spec.pong_timeout,
            spec.stale_timeout,
            spec.app_ping,
            spec.app_ping_interval,
            None if spec.field_mapping is None else Jsonb(spec.field_mapping),
            spec.retention_days,
        ),
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
            " rejected_by_category, updated_at)"
            " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now()"
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
            " rejected_by_category = excluded.rejected_by_category, updated_at = now()",
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
                    s.connector_id,
                )
                for s in statuses
            ],
        )


def get_status(conn: Conn, connector_id: str) -> ConnectorStatus | None:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        "SELECT connector_id, status, messages_received, records_stored, messages_rejected,"
        " control_messages, errors, reconnects, last_message_at, last_error, started_at,"
        " messages_gap, records_duplicate, rejected_by_category"
        " FROM connector_status WHERE connector_id = %s",
        (connector_id,),
    )
    row = cur.fetchone()
    return ConnectorStatus(**row) if row else None


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


def list_gaps(conn: Conn, connector_id: str, limit: int) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        "SELECT id, connector_id, gap_from, gap_to, cause, messages_lost, created_at"
        " FROM connector_gaps WHERE connector_id = %s ORDER BY id DESC LIMIT %s",
        (connector_id, limit),
    )
    return cur.fetchall()


def list_errors(conn: Conn, connector_id: str, limit: int) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        "SELECT id, connector_id, occurred_at, kind, message"
        " FROM connector_errors WHERE connector_id = %s ORDER BY id DESC LIMIT %s",
        (connector_id, limit),
    )
    return cur.fetchall()


def list_rejected(conn: Conn, connector_id: str, limit: int) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        "SELECT id, connector_id, received_at, category, reason, raw"
        " FROM rejected_messages WHERE connector_id = %s ORDER BY id DESC LIMIT %s",
        (connector_id, limit),
    )
    return cur.fetchall()
