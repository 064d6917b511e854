"""SQL for connector definitions (``api_connectors``) and their status
(``connector_status``). Plain functions taking a connection; run them through
:meth:`Database.run`."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ..models import ConnectorSpec, ConnectorStatus

Conn = psycopg.Connection[Any]

_COLUMNS = (
    "connector_id, name, api_url, protocol, exchange, http_method, headers, query_params,"
    " auth_type, polling_interval, subscribe_messages, desired_state, created_at, updated_at"
)


def _spec(row: dict[str, Any]) -> ConnectorSpec:
    return ConnectorSpec(**row)


def insert_connector(conn: Conn, spec: ConnectorSpec) -> ConnectorSpec:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        f"INSERT INTO api_connectors ({_COLUMNS})"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), now())"
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
            " last_message_at, last_error, started_at, updated_at)"
            " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now()"
            " WHERE EXISTS (SELECT 1 FROM api_connectors WHERE connector_id = %s)"
            " ON CONFLICT (connector_id) DO UPDATE SET status = excluded.status,"
            " messages_received = excluded.messages_received,"
            " records_stored = excluded.records_stored,"
            " messages_rejected = excluded.messages_rejected,"
            " control_messages = excluded.control_messages, errors = excluded.errors,"
            " reconnects = excluded.reconnects, last_message_at = excluded.last_message_at,"
            " last_error = excluded.last_error, started_at = excluded.started_at,"
            " updated_at = now()",
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
                    s.connector_id,
                )
                for s in statuses
            ],
        )


def get_status(conn: Conn, connector_id: str) -> ConnectorStatus | None:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        "SELECT connector_id, status, messages_received, records_stored, messages_rejected,"
        " control_messages, errors, reconnects, last_message_at, last_error, started_at"
        " FROM connector_status WHERE connector_id = %s",
        (connector_id,),
    )
    row = cur.fetchone()
    return ConnectorStatus(**row) if row else None


def status_names(conn: Conn) -> dict[str, str]:
    """Each connector's last persisted status word."""
    rows = conn.execute("SELECT connector_id, status FROM connector_status").fetchall()
    return {row[0]: row[1] for row in rows}
