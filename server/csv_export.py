"""Stored rows as CSV (``GET /api/websocket/data.csv``): fixed columns per collection,
numbers with their stored digits, times in ISO 8601, the raw payload as JSON text. Pure."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

RECORD_CSV_COLUMNS = [
    "id",
    "connector_id",
    "exchange",
    "instrument",
    "message_type",
    "timestamp",
    "received_at",
    "price",
    "size",
    "side",
    "bid_price",
    "bid_size",
    "ask_price",
    "ask_size",
    "source_id",
    "session_id",
    "status_code",
    "response_time_ms",
    "batch_id",
    "message_number",
    "format",
    "data",
]
BATCH_CSV_COLUMNS = ["id", "connector_id", "exchange", "message_count", "received_at", "metrics"]


def csv_values(row: dict[str, Any], columns: list[str]) -> list[object]:
    """One row's values in ``columns`` order; a column the row lacks is empty."""
    out: list[object] = []
    for name in columns:
        value = row.get(name)
        if isinstance(value, datetime):
            value = value.isoformat()
        out.append("" if value is None else value)
    return out


def csv_rows(rows: Sequence[Sequence[object]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode()
