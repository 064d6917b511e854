"""SQL of the cluster: instance membership, connector leases, control notifications.

A lease is a row per connector: ``owner``, ``epoch`` (grows on every change of owner) and
``expires_at``. Its owner renews every lease it holds in one statement per heartbeat; a
lease whose owner stopped renewing expires and may be taken, with the next epoch. Record
writes check their connectors' epochs in their own transaction (``fenced_records``), with
the lease rows locked ``FOR SHARE``, so a takeover waits for them and a writer that lost
its lease stores nothing more for that connector.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import attrs
import orjson
import psycopg

from ..models import ConnectorSpec, Record, StoredRecord
from .connectors import get_connector
from .records import (
    TABLES,
    batch_json,
    can_commit_at_once,
    commit_at_once,
    insert_from_json,
    insert_records,
    returned,
    with_lost_attempt,
)

Conn = psycopg.Connection[Any]

CONTROL_CHANNEL = "sluice_control"
FEED_CHANNEL = "sluice_feed"
MAX_PAYLOAD = 7900  # NOTIFY payloads must stay under 8000 bytes


def register(
    conn: Conn, instance_id: str, host: str, pid: int, version: str, url: str | None
) -> None:
    conn.execute(
        "INSERT INTO cluster_instances (instance_id, host, pid, version, listen_url)"
        " VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL,"
        " listen_url = EXCLUDED.listen_url",
        (instance_id, host, pid, version, url),
    )


def reap_local(conn: Conn, host: str, alive: Callable[[int], bool]) -> list[str]:
    """Instances registered on this host whose process is gone (``kill -9``): leave the
    live list and let their leases expire now, so a restart need not wait for the TTL."""
    rows = conn.execute(
        "SELECT instance_id, pid FROM cluster_instances WHERE host = %s AND stopped_at IS NULL",
        (host,),
    ).fetchall()
    dead = [iid for iid, pid in rows if not alive(int(pid))]
    if dead:
        conn.execute(
            "UPDATE connector_leases SET expires_at = now() WHERE owner = ANY(%s)", (dead,)
        )
        conn.execute(
            "UPDATE cluster_instances SET stopped_at = now(), exit = 'crash'"
            " WHERE instance_id = ANY(%s)",
            (dead,),
        )
    return dead


def set_url(conn: Conn, instance_id: str, url: str) -> None:
    conn.execute(
        "UPDATE cluster_instances SET listen_url = %s WHERE instance_id = %s", (url, instance_id)
    )


def heartbeat(conn: Conn, instance_id: str, ttl: float) -> tuple[list[str], dict[str, int]]:
    """Renew this instance and every lease it holds; return the live instances (sorted)
    and the leases still held (connector → epoch)."""
    conn.execute(
        "UPDATE cluster_instances SET heartbeat_at = now(), stopped_at = NULL"
        " WHERE instance_id = %s",
        (instance_id,),
    )
    # An expired lease nobody took is still ours (same epoch): after a database outage
    # the owner simply goes on; a taker changes the owner and the epoch.
    held = conn.execute(
        "UPDATE connector_leases SET expires_at = now() + make_interval(secs => %s)"
        " WHERE owner = %s RETURNING connector_id, epoch",
        (ttl, instance_id),
    ).fetchall()
    live = conn.execute(
        "SELECT instance_id FROM cluster_instances WHERE stopped_at IS NULL"
        " AND heartbeat_at > now() - make_interval(secs => %s) ORDER BY instance_id",
        (ttl,),
    ).fetchall()
    return [row[0] for row in live], {row[0]: int(row[1]) for row in held}


def deregister(conn: Conn, instance_id: str) -> None:
    """A clean exit: leases expire now (still naming this instance, so the next owner
    records the handover), and the instance leaves the live list."""
    conn.execute("UPDATE connector_leases SET expires_at = now() WHERE owner = %s", (instance_id,))
    conn.execute(
        "UPDATE cluster_instances SET stopped_at = now() WHERE instance_id = %s", (instance_id,)
    )


def wanted(conn: Conn) -> list[str]:
    """Connectors that should run, oldest first."""
    rows = conn.execute(
        "SELECT connector_id FROM api_connectors WHERE desired_state = 'running'"
        " ORDER BY created_at, connector_id"
    ).fetchall()
    return [row[0] for row in rows]


def free_leases(conn: Conn, connector_ids: Sequence[str]) -> list[str]:
    """Which of ``connector_ids`` nobody holds (no lease, expired, or released)."""
    held = conn.execute(
        "SELECT connector_id FROM connector_leases WHERE connector_id = ANY(%s)"
        " AND owner IS NOT NULL AND expires_at > now()",
        (list(connector_ids),),
    ).fetchall()
    taken = {row[0] for row in held}
    return [c for c in connector_ids if c not in taken]


def acquire(
    conn: Conn, connector_id: str, instance_id: str, ttl: float
) -> tuple[int, str | None, str | None] | None:
    """Take the lease if nobody holds it (none, released, or expired); return the new
    epoch, the instance that held it before (``None`` after a stop) and how that instance
    ended (``clean``, ``crash``, or ``None``: it stopped answering) — or ``None`` if the
    lease is held."""
    before = conn.execute(
        "SELECT l.owner, i.exit FROM connector_leases l"
        " LEFT JOIN cluster_instances i ON i.instance_id = l.owner"
        " WHERE l.connector_id = %s FOR UPDATE OF l",
        (connector_id,),
    ).fetchone()
    row = conn.execute(
        "INSERT INTO connector_leases (connector_id, owner, epoch, expires_at)"
        " SELECT %s, %s, 1, now() + make_interval(secs => %s)"
        " WHERE EXISTS (SELECT 1 FROM api_connectors WHERE connector_id = %s)"
        " ON CONFLICT (connector_id) DO UPDATE SET owner = EXCLUDED.owner,"
        "  epoch = connector_leases.epoch + 1, expires_at = EXCLUDED.expires_at,"
        "  acquired_at = now()"
        " WHERE connector_leases.owner IS NULL OR connector_leases.expires_at <= now()"
        " RETURNING epoch",
        (connector_id, instance_id, ttl, connector_id),
    ).fetchone()
    if row is None:
        return None
    previous = before[0] if before else None
    ended = before[1] if before else None
    return int(row[0]), (previous if previous != instance_id else None), ended


@attrs.frozen
class Claim:
    """A lease taken by :func:`claim`: the new epoch, who held it before and how that one
    ended (as :func:`acquire` says), the connector's definition and when its newest stored
    record arrived (the start of its gap; ``None`` if it never stored one)."""

    epoch: int
    previous: str | None
    ended: str | None
    spec: ConnectorSpec
    since: datetime | None


def claim(
    conn: Conn,
    connector_id: str,
    instance_id: str,
    ttl: float,
    room: Callable[[int], bool] | None = None,
) -> Claim | None:
    """Take one connector's lease, with what starting it needs, in one transaction.

    With ``room``, only if this instance has room for it: ``room(n)`` says whether its
    share of ``n`` wanted connectors exceeds what it holds. ``None``: no room, the lease
    is held, or the connector is gone."""
    if room is not None:
        wanted = conn.execute(
            "SELECT count(*) FROM api_connectors WHERE desired_state = 'running'"
        ).fetchone()
        if not room(int(wanted[0]) if wanted else 0):
            return None
    spec = get_connector(conn, connector_id)
    if spec is None:
        return None
    taken = acquire(conn, connector_id, instance_id, ttl)
    if taken is None:
        return None
    since = last_received(conn, connector_id, TABLES[spec.protocol])
    return Claim(*taken, spec, since)


def release(conn: Conn, connector_id: str, instance_id: str, epoch: int, *, hand_on: bool) -> None:
    """Give a lease up. ``hand_on`` (rebalancing) leaves this instance named as the last
    owner, expired, so the taker records the handover gap; otherwise (the connector was
    stopped) the lease is simply free."""
    conn.execute(
        "UPDATE connector_leases SET expires_at = now()"
        + ("" if hand_on else ", owner = NULL")
        + " WHERE connector_id = %s AND owner = %s AND epoch = %s",
        (connector_id, instance_id, epoch),
    )


def last_received(conn: Conn, connector_id: str, table: str) -> datetime | None:
    """When the connector's newest stored record arrived (the start of a handover gap).

    Read from its newest records by source time (the unique index leads with
    ``connector_id, "timestamp"``: a few index entries per day partition), not from all
    of them: a ``max(received_at)`` over every row of the connector took 79 ms against
    1 ms here with 360,000 of its rows (seconds at tens of millions), and it runs before
    a connector starts. The latest arrival among the newest hundred by source time is the
    last arrival unless the source sent a record stamped older after a hundred newer
    ones; the gap then starts a little early, never late."""
    if table not in ("websocket_messages", "api_connector_data"):
        raise ValueError("table not allowed")
    row = conn.execute(
        f"SELECT max(received_at) FROM (SELECT received_at FROM {table}"
        ' WHERE connector_id = %s ORDER BY "timestamp" DESC LIMIT 100) newest',
        (connector_id,),
    ).fetchone()
    return row[0] if row else None


_LEASE_CHECK = (
    "SELECT connector_id, epoch FROM connector_leases"
    " WHERE connector_id = ANY(%s) AND owner = %s FOR SHARE"
)
# The check and the insert as one statement (see _write_fenced_at_once): the batch's
# rows ``r`` of a connector run are kept only while this instance holds the run's lease
# at its epoch, read from the lease rows the check locks.
_HELD = (
    "r.session_id IS NULL OR NOT coalesce(r.connector_id = ANY(%s::text[]), false)"
    " OR EXISTS (SELECT FROM held WHERE held.connector_id = r.connector_id"
    " AND held.epoch = (%s::jsonb ->> r.connector_id)::bigint)"
)


@functools.cache
def _at_once(source: str, fenced: bool, announce: bool) -> bytes:
    """The statement of :func:`_write_fenced_at_once`. With ``fenced``, the lease check
    (``held``) and the insert keeping what it allows; with ``announce``, the notification
    of the ids stored, as :func:`notify_committed` words it (one payload: a small batch's
    at most ``SMALL_BATCH`` runs stay under PostgreSQL's 8,000 bytes). Its rows: those the
    insert returns, then the lease rows (no id; the epoch as text), then one row of
    NULLs if it notified."""
    table = TABLES[source]
    parts = [f"held AS ({_LEASE_CHECK})"] if fenced else []
    parts.append(f"stored AS ({insert_from_json(source, _HELD if fenced else 'true')})")
    rows = ["SELECT id, connector_id, dedup_key FROM stored"]
    if fenced:
        rows.append("SELECT NULL, connector_id, epoch::text FROM held")
    if announce:
        parts.append(
            f"told AS (SELECT pg_notify('{FEED_CHANNEL}', json_build_object('i', %s::text,"
            f" 't', 'records', 's', '{table}', 'r', json_agg(json_build_array(lo, hi)"
            " ORDER BY lo))::text) FROM (SELECT min(id) AS lo, max(id) AS hi FROM"
            " (SELECT id, id - row_number() OVER (ORDER BY id) AS run FROM stored) AS numbered"
            " GROUP BY run) AS runs HAVING count(*) > 0)"
        )
        rows.append("SELECT NULL, NULL, NULL FROM told")
    return f"WITH {', '.join(parts)} {' UNION ALL '.join(rows)}".encode()


def valid_epochs(conn: Conn, instance_id: str, epochs: dict[str, int]) -> set[str]:
    """In the write transaction: the connectors whose lease this instance still holds at
    the epoch it started them with. The rows stay locked until the commit."""
    if not epochs:
        return set()
    rows = conn.execute(_LEASE_CHECK, (list(epochs), instance_id)).fetchall()
    return _held(rows, epochs)


def _held(rows: Sequence[tuple[Any, ...]], epochs: dict[str, int]) -> set[str]:
    return {cid for cid, epoch in rows if epochs.get(cid) == epoch}


def _fence(
    records: Sequence[Record], runs: set[str], valid: set[str]
) -> tuple[list[Record], Counter[str]]:
    """``records`` less those of connector runs whose lease is not held (``valid``), and
    how many those were per connector."""
    fenced: Counter[str] = Counter()
    kept = []
    for r in records:
        if r.session_id is not None and r.connector_id in runs and r.connector_id not in valid:
            fenced[r.connector_id] += 1
        else:
            kept.append(r)
    return kept, fenced


def write_fenced(
    conn: Conn,
    records: Sequence[Record],
    instance_id: str,
    epochs: dict[str, int],
    runs: set[str],
    announce: bool,
    recover: bool = False,
) -> tuple[list[StoredRecord], int, Counter[str]]:
    """Insert ``records`` in this transaction, except those of connector runs (``runs``)
    whose lease this instance no longer holds at the epoch in ``epochs``; with
    ``announce``, notify the other instances of the ids committed. Returns the stored
    records, the duplicates skipped, and the fenced records per connector (``recover``: as
    for :func:`insert_records`).

    A small batch (not a retry) is written as one statement that commits itself
    (:func:`_write_fenced_at_once`): ``conn`` must then not be in a transaction."""
    if not recover and can_commit_at_once(records):
        return _write_fenced_at_once(conn, records, instance_id, epochs, runs, announce)
    fenced: Counter[str] = Counter()
    if runs:
        records, fenced = _fence(records, runs, valid_epochs(conn, instance_id, epochs))
    stored, duplicates = insert_records(conn, records)
    if announce and stored:
        table = TABLES[records[0].source]
        notify_committed(conn, instance_id, table, [s.id for s in stored])
    if recover:
        # What the lost attempt stored, it also announced when it committed: the other
        # instances have those; only this one's subscribers still need them.
        stored, duplicates = with_lost_attempt(conn, records, stored, duplicates)
    return stored, duplicates, fenced


def _write_fenced_at_once(
    conn: Conn,
    records: Sequence[Record],
    instance_id: str,
    epochs: dict[str, int],
    runs: set[str],
    announce: bool,
) -> tuple[list[StoredRecord], int, Counter[str]]:
    """:func:`write_fenced` of a small batch in one statement, its own transaction (one
    round trip instead of four or five, :func:`records.commit_at_once`): the lease check
    locks the lease rows, the insert keeps what they allow, the notification names what
    it stored, and the rows returned say what was stored and which leases were held."""
    params: list[Any] = [list(epochs), instance_id] if runs else []
    params.append(batch_json(records))
    if runs:
        params += [sorted(runs), orjson.dumps(epochs).decode()]
    if announce:
        params.append(instance_id)
    statement = _at_once(records[0].source, bool(runs), announce)
    rows = commit_at_once(conn, records, statement, params)
    inserted = [row for row in rows if row[0] is not None]
    held = [(cid, int(epoch)) for no_id, cid, epoch in rows if no_id is None and cid is not None]
    kept, fenced = _fence(records, runs, _held(held, epochs)) if runs else (records, Counter())
    return (*returned(kept, inserted), fenced)


def notify(conn: Conn, channel: str, payload: dict[str, Any]) -> None:
    conn.execute("SELECT pg_notify(%s, %s)", (channel, orjson.dumps(payload).decode()))


def id_ranges(ids: Sequence[int]) -> list[list[int]]:
    """Sorted ids as ``[first, last]`` runs (a batch's ids are mostly consecutive)."""
    runs: list[list[int]] = []
    for i in sorted(ids):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return runs


def notify_committed(conn: Conn, instance_id: str, table: str, ids: Sequence[int]) -> None:
    """Tell the other instances which ids this transaction commits (delivered at commit,
    in commit order), in payloads under PostgreSQL's limit."""
    runs = id_ranges(ids)
    chunk: list[list[int]] = []
    size = 0
    for run in runs:
        chunk.append(run)
        size += 24
        if size >= MAX_PAYLOAD - 200:
            notify(conn, FEED_CHANNEL, {"i": instance_id, "t": "records", "s": table, "r": chunk})
            chunk, size = [], 0
    if chunk:
        notify(conn, FEED_CHANNEL, {"i": instance_id, "t": "records", "s": table, "r": chunk})


_RECORD_SELECT = (
    "SELECT id, connector_id, exchange, instrument, price::text AS price,"
    ' size::text AS size, side, message_type, "timestamp", received_at,'
    " data::text AS data, dedup_key, bid_price::text AS bid_price,"
    " bid_size::text AS bid_size, ask_price::text AS ask_price,"
    " ask_size::text AS ask_size, source_id, session_id"
)


def records_by_ids(conn: Conn, table: str, runs: list[list[int]]) -> list[dict[str, Any]]:
    """The committed rows of ``runs`` (id ranges), in id order, for the realtime relay."""
    if table not in ("websocket_messages", "api_connector_data"):
        raise ValueError("table not allowed")
    extra = (
        ", status_code, response_time_ms"
        if table == "api_connector_data"
        else ", batch_id, message_number, format"
    )
    starts = [r[0] for r in runs]
    ends = [r[1] for r in runs]
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    cur.execute(
        f"{_RECORD_SELECT}{extra}"
        f" FROM {table} t JOIN unnest(%s::bigint[], %s::bigint[]) AS r(lo, hi)"
        " ON t.id BETWEEN r.lo AND r.hi"
        # The same rows, bounded as one range too: lets the planner scan the id index of
        # each partition once instead of judging the join alone (read-backs of merged
        # runs fell behind as the table grew; bench/README.md, the instances sweep).
        " WHERE t.id BETWEEN %s AND %s ORDER BY id",
        (starts, ends, min(starts), max(ends)),
    )
    return cur.fetchall()


def records_after(
    conn: Conn,
    after_id: int,
    *,
    connector_id: str | None,
    exchange: str | None,
    instrument: str | None,
    types: Sequence[str] | None,
    limit: int,
    upto: int | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Realtime resume: up to ``limit`` committed records with an id above ``after_id``
    (and at most ``upto``) that match the subscription, from both record tables, in id
    order; and the retention floor (records at or below it may be gone)."""
    where = ["id > %s"]
    params: list[Any] = [after_id]
    if upto is not None:
        where.append("id <= %s")
        params.append(upto)
    for column, value in (
        ("connector_id", connector_id),
        ("exchange", exchange),
        ("instrument", instrument),
    ):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if types:
        where.append("message_type = ANY(%s)")
        params.append(list(types))
    cond = " AND ".join(where)
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    cur.execute(
        f"({_RECORD_SELECT}, batch_id, message_number, format, NULL::int AS status_code,"
        f" NULL::float8 AS response_time_ms, 'websocket' AS source"
        f" FROM websocket_messages WHERE {cond} ORDER BY id LIMIT %s)"
        " UNION ALL "
        f"({_RECORD_SELECT}, NULL::bigint, NULL::bigint, NULL::text, status_code,"
        f" response_time_ms, 'rest' FROM api_connector_data WHERE {cond} ORDER BY id LIMIT %s)"
        " ORDER BY id LIMIT %s",
        [*params, limit, *params, limit, limit],
    )
    rows = cur.fetchall()
    floor = conn.execute("SELECT id FROM record_floor").fetchone()
    return rows, int(floor[0]) if floor else 0


def lease_rows(conn: Conn) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    cur.execute(
        "SELECT connector_id, owner, epoch, expires_at, acquired_at, expires_at > now() AS live"
        " FROM connector_leases ORDER BY connector_id"
    )
    return cur.fetchall()


def instance_rows(conn: Conn, ttl: float) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    cur.execute(
        "SELECT instance_id, host, pid, version, listen_url, started_at, heartbeat_at,"
        " heartbeat_at > now() - make_interval(secs => %s) AND stopped_at IS NULL AS live"
        " FROM cluster_instances WHERE stopped_at IS NULL"
        " OR stopped_at > now() - interval '1 hour' ORDER BY instance_id",
        (ttl,),
    )
    return cur.fetchall()


def record_from_row(row: dict[str, Any]) -> Record:
    """A stored row back as the record the hub publishes."""
    return Record(
        connector_id=row["connector_id"],
        exchange=row["exchange"],
        instrument=row["instrument"],
        price=row["price"],
        size=row["size"],
        side=row["side"],
        message_type=row["message_type"],
        timestamp=row["timestamp"],
        received_at=row["received_at"],
        data=row["data"].encode(),
        dedup_key=row["dedup_key"],
        source=row.get("source") or ("rest" if "status_code" in row else "websocket"),
        bid_price=row["bid_price"],
        bid_size=row["bid_size"],
        ask_price=row["ask_price"],
        ask_size=row["ask_size"],
        batch_id=row.get("batch_id"),
        status_code=row.get("status_code"),
        response_time_ms=row.get("response_time_ms"),
        source_id=row["source_id"],
        session_id=row["session_id"],
        message_number=row.get("message_number"),
        format=row.get("format"),
    )
