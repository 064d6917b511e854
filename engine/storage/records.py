"""Writing record batches: binary COPY into a per-connection staging table, then one
``INSERT … SELECT … ON CONFLICT DO NOTHING`` so a retried batch never duplicates.

Prices and sizes travel as the source's decimal text and are cast to ``numeric`` by
PostgreSQL, so they are stored exactly; a value it refuses fails the batch with a data
error, which the writer isolates by splitting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ..models import Record, StoredRecord
from .database import RawJsonb

TABLES = {"websocket": "websocket_messages", "rest": "api_connector_data"}


_COPY = (
    "COPY sluice_staging_v3 (ord, connector_id, exchange, instrument, price, size, side,"
    ' message_type, "timestamp", received_at, data, dedup_key, bid_price, bid_size,'
    " ask_price, ask_size, batch_id, status_code, response_time_ms) FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = [
    "int4",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "timestamptz",
    "timestamptz",
    "jsonb",
    "text",
    "text",
    "text",
    "text",
    "text",
    "int8",
    "int4",
    "float8",
]
_INSERT = """
INSERT INTO {table} (connector_id, exchange, instrument, price, size, side, message_type,
                     "timestamp", received_at, data, dedup_key,
                     bid_price, bid_size, ask_price, ask_size{extra})
SELECT connector_id, exchange, instrument, price::numeric, size::numeric, side, message_type,
       "timestamp", received_at, data, dedup_key,
       bid_price::numeric, bid_size::numeric, ask_price::numeric, ask_size::numeric{extra}
FROM sluice_staging_v3 ORDER BY ord
ON CONFLICT DO NOTHING
RETURNING id, connector_id, dedup_key
"""
# websocket_messages keeps the batch a saved message arrived in.
_EXTRA = {"websocket": ", batch_id", "rest": ", status_code, response_time_ms"}


def insert_records(
    conn: psycopg.Connection[Any], records: Sequence[Record]
) -> tuple[list[StoredRecord], int]:
    """Insert ``records`` (all of one source kind) in the current transaction.

    Returns the records actually inserted, in id order, and how many were already stored
    (same connector and dedup key) and so skipped.
    """
    if not records:
        return [], 0
    table = TABLES[records[0].source]
    with conn.cursor() as cur:
        with cur.copy(_COPY) as copy:
            copy.set_types(_COPY_TYPES)
            for ord_, r in enumerate(records):
                copy.write_row(
                    (
                        ord_,
                        r.connector_id,
                        r.exchange,
                        r.instrument,
                        r.price,
                        r.size,
                        r.side,
                        r.message_type,
                        r.timestamp,
                        r.received_at,
                        RawJsonb(r.data),
                        r.dedup_key,
                        r.bid_price,
                        r.bid_size,
                        r.ask_price,
                        r.ask_size,
                        r.batch_id,
                        r.status_code,
                        r.response_time_ms,
                    )
                )
        cur.execute(_INSERT.format(table=table, extra=_EXTRA[records[0].source]).encode())
        inserted = cur.fetchall()
    by_key = {(r.connector_id, r.dedup_key): r for r in records}
    stored = [StoredRecord(id=row[0], record=by_key[(row[1], row[2])]) for row in inserted]
    stored.sort(key=lambda s: s.id)
    return stored, len(records) - len(stored)
