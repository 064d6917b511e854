"""Versioned schema migrations, applied in order at startup and by ``sluice migrate``.

Each migration runs once, in its own transaction, under an advisory lock so that two
processes starting together do not race. Never edit a released migration: add a new one.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import psycopg

from . import partitions

logger = logging.getLogger(__name__)

_LOCK_ID = 0x51_1C_E0_01

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial schema",
        """
        CREATE SEQUENCE record_id_seq;

        CREATE TABLE api_connectors (
            connector_id       text PRIMARY KEY,
            name               text NOT NULL,
            api_url            text NOT NULL,
            protocol           text NOT NULL CHECK (protocol IN ('websocket', 'rest')),
            exchange           text NOT NULL,
            http_method        text NOT NULL DEFAULT 'GET',
            headers            jsonb NOT NULL DEFAULT '{}',
            query_params       jsonb NOT NULL DEFAULT '{}',
            auth_type          text NOT NULL DEFAULT 'None',
            polling_interval   integer NOT NULL DEFAULT 1000,
            subscribe_messages jsonb NOT NULL DEFAULT '[]',
            desired_state      text NOT NULL DEFAULT 'stopped'
                               CHECK (desired_state IN ('running', 'stopped')),
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX api_connectors_created ON api_connectors (created_at);

        CREATE TABLE connector_status (
            connector_id       text PRIMARY KEY
                               REFERENCES api_connectors ON DELETE CASCADE,
            status             text NOT NULL,
            messages_received  bigint NOT NULL DEFAULT 0,
            records_stored     bigint NOT NULL DEFAULT 0,
            messages_rejected  bigint NOT NULL DEFAULT 0,
            control_messages   bigint NOT NULL DEFAULT 0,
            errors             bigint NOT NULL DEFAULT 0,
            reconnects         bigint NOT NULL DEFAULT 0,
            last_message_at    timestamptz,
            last_error         text,
            started_at         timestamptz,
            updated_at         timestamptz NOT NULL DEFAULT now()
        );

        -- Records from WebSocket connectors and from POST /api/websocket/save.
        -- Ids come from one sequence shared with api_connector_data, so a realtime
        -- "id" names exactly one stored record.
        CREATE TABLE websocket_messages (
            id            bigint PRIMARY KEY DEFAULT nextval('record_id_seq'),
            connector_id  text,
            exchange      text NOT NULL,
            instrument    text,
            price         numeric,
            size          numeric,
            side          text,
            message_type  text NOT NULL,
            "timestamp"   timestamptz NOT NULL,
            received_at   timestamptz NOT NULL,
            data          jsonb NOT NULL,
            dedup_key     text NOT NULL,
            batch_id      bigint
        );
        CREATE UNIQUE INDEX websocket_messages_dedup
            ON websocket_messages (connector_id, dedup_key);
        CREATE INDEX websocket_messages_connector_time
            ON websocket_messages (connector_id, "timestamp");
        CREATE INDEX websocket_messages_instrument_time
            ON websocket_messages (exchange, instrument, "timestamp");
        CREATE INDEX websocket_messages_time ON websocket_messages USING brin ("timestamp");

        -- Records from REST polling connectors.
        CREATE TABLE api_connector_data (
            id               bigint PRIMARY KEY DEFAULT nextval('record_id_seq'),
            connector_id     text,
            exchange         text NOT NULL,
            instrument       text,
            price            numeric,
            size             numeric,
            side             text,
            message_type     text NOT NULL,
            "timestamp"      timestamptz NOT NULL,
            received_at      timestamptz NOT NULL,
            data             jsonb NOT NULL,
            dedup_key        text NOT NULL,
            status_code      integer,
            response_time_ms double precision
        );
        CREATE UNIQUE INDEX api_connector_data_dedup
            ON api_connector_data (connector_id, dedup_key);
        CREATE INDEX api_connector_data_connector_time
            ON api_connector_data (connector_id, "timestamp");
        CREATE INDEX api_connector_data_time ON api_connector_data USING brin ("timestamp");

        CREATE TABLE websocket_batches (
            id             bigserial PRIMARY KEY,
            connector_id   text,
            exchange       text,
            message_count  integer NOT NULL,
            metrics        jsonb NOT NULL DEFAULT '{}',
            received_at    timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX websocket_batches_connector ON websocket_batches (connector_id, received_at);
        """,
    ),
    (
        2,
        "keepalive options, field mapping, best bid/ask, gaps, errors, rejected messages",
        """
        ALTER TABLE api_connectors
            ADD COLUMN ping_interval     double precision NOT NULL DEFAULT 20,
            ADD COLUMN pong_timeout      double precision NOT NULL DEFAULT 10,
            ADD COLUMN stale_timeout     double precision NOT NULL DEFAULT 0,
            ADD COLUMN app_ping          text,
            ADD COLUMN app_ping_interval double precision NOT NULL DEFAULT 25,
            ADD COLUMN field_mapping     jsonb,
            ADD COLUMN retention_days    integer;

        ALTER TABLE websocket_messages
            ADD COLUMN bid_price numeric, ADD COLUMN bid_size numeric,
            ADD COLUMN ask_price numeric, ADD COLUMN ask_size numeric;
        ALTER TABLE api_connector_data
            ADD COLUMN bid_price numeric, ADD COLUMN bid_size numeric,
            ADD COLUMN ask_price numeric, ADD COLUMN ask_size numeric;

        -- Records saved through the API without a connector are deduplicated too.
        CREATE UNIQUE INDEX websocket_messages_dedup_unowned
            ON websocket_messages (dedup_key) WHERE connector_id IS NULL;
        CREATE UNIQUE INDEX api_connector_data_dedup_unowned
            ON api_connector_data (dedup_key) WHERE connector_id IS NULL;

        ALTER TABLE connector_status
            ADD COLUMN messages_gap bigint NOT NULL DEFAULT 0,
            ADD COLUMN records_duplicate bigint NOT NULL DEFAULT 0,
            ADD COLUMN rejected_by_category jsonb NOT NULL DEFAULT '{}';

        -- Every disconnect or buffer overflow: a stretch of time we may have missed data.
        CREATE TABLE connector_gaps (
            id             bigserial PRIMARY KEY,
            connector_id   text NOT NULL,
            gap_from       timestamptz NOT NULL,
            gap_to         timestamptz NOT NULL,
            cause          text NOT NULL,
            messages_lost  bigint,
            created_at     timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX connector_gaps_connector ON connector_gaps (connector_id, id);

        CREATE TABLE connector_errors (
            id            bigserial PRIMARY KEY,
            connector_id  text NOT NULL,
            occurred_at   timestamptz NOT NULL,
            kind          text NOT NULL,
            message       text NOT NULL
        );
        CREATE INDEX connector_errors_connector ON connector_errors (connector_id, id);

        -- Dead letters: messages or records that could not be stored, with the reason.
        CREATE TABLE rejected_messages (
            id            bigserial PRIMARY KEY,
            connector_id  text,
            received_at   timestamptz NOT NULL,
            category      text NOT NULL,
            reason        text NOT NULL,
            raw           text NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX rejected_messages_connector ON rejected_messages (connector_id, id);
        """,
    ),
    (
        3,
        "REST sources: encrypted credentials, auth options, poll counters",
        """
        -- Secret values (api_key, api_secret, ...) as AES-256-GCM ciphertexts; header and
        -- query parameter values in api_connectors.headers/query_params are encrypted too.
        ALTER TABLE api_connectors
            ADD COLUMN credentials  jsonb NOT NULL DEFAULT '{}',
            ADD COLUMN auth_options jsonb NOT NULL DEFAULT '{}',
            ADD COLUMN request_body jsonb;

        ALTER TABLE connector_status
            ADD COLUMN requests         bigint NOT NULL DEFAULT 0,
            ADD COLUMN skipped_ticks    bigint NOT NULL DEFAULT 0,
            ADD COLUMN last_status_code integer;
        """,
    ),
    (
        4,
        "Records of the original service's shape: source and session ids, save metadata",
        """
        -- source_id: the source's own id of the record (trade id, sequence);
        -- session_id: one id per connector run. Saved messages keep messageNumber/format.
        ALTER TABLE websocket_messages
            ADD COLUMN source_id      text,
            ADD COLUMN session_id     text,
            ADD COLUMN message_number bigint,
            ADD COLUMN format         text;
        ALTER TABLE api_connector_data
            ADD COLUMN source_id      text,
            ADD COLUMN session_id     text;
        -- Names of header and query values that are credentials (masked in responses).
        ALTER TABLE api_connectors
            ADD COLUMN secret_names   jsonb NOT NULL DEFAULT '{}';
        """,
    ),
    (
        5,
        "A cluster on one database: instances, connector leases with epochs",
        """
        -- Every process registers here and heartbeats; live = heartbeat within the TTL.
        CREATE TABLE cluster_instances (
            instance_id   text PRIMARY KEY,
            host          text NOT NULL,
            pid           integer NOT NULL,
            version       text NOT NULL,
            listen_url    text,
            started_at    timestamptz NOT NULL DEFAULT now(),
            heartbeat_at  timestamptz NOT NULL DEFAULT now(),
            stopped_at    timestamptz
        );
        -- Each running connector runs in exactly one process: the lease owner. The epoch
        -- grows on every change of owner; writes check it in their own transaction.
        CREATE TABLE connector_leases (
            connector_id  text PRIMARY KEY
                          REFERENCES api_connectors (connector_id) ON DELETE CASCADE,
            owner         text,
            epoch         bigint NOT NULL DEFAULT 0,
            expires_at    timestamptz NOT NULL DEFAULT now(),
            acquired_at   timestamptz NOT NULL DEFAULT now()
        );
        ALTER TABLE connector_status ADD COLUMN instance_id text;
        """,
    ),
    (
        6,
        "Realtime resume: the highest record id retention has deleted",
        """
        CREATE TABLE record_floor (id bigint NOT NULL);
        INSERT INTO record_floor VALUES (0);
        """,
    ),
    (
        7,
        "How an instance ended: a clean exit or a crash found by its successor",
        """
        ALTER TABLE cluster_instances ADD COLUMN exit text;
        """,
    ),
    (
        8,
        "Record tables partitioned by day of the source's time; REST keys without a time",
        # The old tables keep their rows and primary key under a new name until
        # move_unpartitioned() has moved every row (bounded batches, each committed).
        # Indexes: docs/storage.md "Indexes" gives each one's cost on the store ceiling
        # (bench/store.py) and the plans of the queries the data endpoints run. The unique
        # (connector_id, "timestamp", dedup_key) both deduplicates and serves "one
        # connector's records by time"; the BRIN index on time is gone. The payload
        # (`data`) stays jsonb, the spec's type, though json stores a third cheaper for
        # PostgreSQL: measured, and why kept, in docs/storage.md ("The raw payload").
        "".join(
            f"""
        ALTER TABLE {t} RENAME TO {t}_unpartitioned;
        ALTER INDEX {t}_pkey RENAME TO {t}_unpartitioned_pkey;
        DROP INDEX {t}_dedup, {t}_dedup_unowned, {t}_connector_time, {t}_time;
        CREATE TABLE {t} (LIKE {t}_unpartitioned INCLUDING DEFAULTS)
            PARTITION BY RANGE ("timestamp");
        ALTER TABLE {t} ADD PRIMARY KEY (id, "timestamp");
        CREATE UNIQUE INDEX {t}_dedup ON {t} (connector_id, "timestamp", dedup_key);
        CREATE UNIQUE INDEX {t}_dedup_unowned ON {t} (dedup_key, "timestamp")
            WHERE connector_id IS NULL;
        """
            for t in ("websocket_messages", "api_connector_data")
        )
        + """
        -- Newest first and time ranges, with or without other filters (the data
        -- endpoint's default order). The (exchange, instrument, "timestamp") index is
        -- gone: it cost more than the whole deduplication index (docs/storage.md).
        DROP INDEX websocket_messages_instrument_time;
        CREATE INDEX websocket_messages_time ON websocket_messages ("timestamp");

        -- Keys of REST records that have a source id but no source time: their partition
        -- key is the poll's time, different on every poll, so the unique index above
        -- cannot see that a later poll returned the same item; this table does.
        CREATE TABLE rest_record_keys (
            connector_id  text NOT NULL,
            dedup_key     text NOT NULL,
            seen_at       timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (connector_id, dedup_key)
        );
        """,
    ),
]

MOVE_BATCH = 20_000  # rows per committed batch when moving (SLUICE_MIGRATE_BATCH)


def latest_version() -> int:
    return MIGRATIONS[-1][0]


def applied_version(conn: psycopg.Connection[Any]) -> int:
    """The newest migration applied, 0 for an empty database."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


@attrs.frozen
class Migrated:
    applied: list[int]  # versions applied now
    moved: int  # rows moved into the partitioned tables


def migrate(conn: psycopg.Connection[Any], *, move_batch: int = MOVE_BATCH) -> Migrated:
    """Apply every pending migration, then move rows still in the unpartitioned record
    tables (:func:`move_unpartitioned`).

    Holds a session advisory lock throughout, so another process starting at the same
    time waits until the schema and the data are both current, and never writes into a
    table whose older rows are still being moved. ``conn`` must be outside a
    transaction (each step commits its own)."""
    conn.commit()
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
    try:
        applied = _apply(conn)
        conn.commit()
        moved = move_unpartitioned(conn, move_batch)
    finally:
        conn.rollback()
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
        conn.commit()
    return Migrated(applied, moved)


def _apply(conn: psycopg.Connection[Any]) -> list[int]:
    applied: list[int] = []
    with conn.transaction():
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = applied_version(conn)
        for version, description, sql in MIGRATIONS:
            if version <= current:
                continue
            with conn.transaction():
                conn.execute(sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, description) VALUES (%s, %s)",
                    (version, description),
                )
            logger.info("applied migration %d: %s", version, description)
            applied.append(version)
        try:
            with conn.transaction():
                partitions.ensure_ahead(conn)  # cheap when they exist: a lookup per day
        except psycopg.errors.LockNotAvailable:
            # Other instances are writing; the retention pass creates them soon, and a
            # write creates a day it needs. Never a reason not to start.
            logger.warning("partitions ahead not created at start: their table is busy")
    return applied


def move_unpartitioned(conn: psycopg.Connection[Any], batch: int = MOVE_BATCH) -> int:
    """Move the rows of a database from before migration 8 into the partitioned tables,
    ``batch`` rows per transaction; drop each old table once empty.
    Returns the rows moved.

    Bounded batches keep each transaction, its locks and its WAL small; a crash loses at
    most one uncommitted batch, and the next start goes on from there. The days the rows
    need are created first, from one scan of the old table."""
    moved = 0
    for table in partitions.RECORD_TABLES:
        old = f"{table}_unpartitioned"
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (old,)).fetchone()
        conn.commit()
        if not exists or not exists[0]:
            continue
        with conn.transaction():
            days = conn.execute(
                f"SELECT DISTINCT (\"timestamp\" AT TIME ZONE 'UTC')::date FROM {old}"
            ).fetchall()
            partitions.create(conn, table, [d[0] for d in days])
        total = conn.execute(f"SELECT count(*) FROM {old}").fetchone()
        conn.commit()
        logger.info("moving %d rows of %s into day partitions", total[0] if total else 0, table)
        rounds = 0
        while True:
            with conn.transaction():
                row = conn.execute(
                    f"WITH gone AS (DELETE FROM {old} WHERE id IN"
                    f" (SELECT id FROM {old} ORDER BY id DESC LIMIT %s) RETURNING *),"
                    f" moved AS (INSERT INTO {table} SELECT * FROM gone ON CONFLICT DO NOTHING)"
                    " SELECT count(*) FROM gone",
                    (batch,),
                ).fetchone()
            n = int(row[0]) if row else 0
            moved += n
            rounds += 1
            if n < batch:
                break
            if rounds % 50 == 0:
                logger.info("moved %d rows so far", moved)
        with conn.transaction():
            left = conn.execute(f"SELECT count(*) FROM {old}").fetchone()
            if left and left[0] == 0:
                conn.execute(f"DROP TABLE {old}")
    if moved:
        logger.info("moved %d rows into day partitions", moved)
    return moved
