"""Stored rows as CSV (``GET /api/websocket/data.csv``): fixed columns per collection,
numbers with their stored digits, times in ISO 8601, the raw payload as JSON text. Pure."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from engine.storage.queries import RECORD_COLUMNS, TABLE_COLUMNS

#: The columns ``/api/websocket/data`` selects, the raw payload last.
RECORD_CSV_COLUMNS = [
    *(c for c in RECORD_COLUMNS if c != "data"),
    *TABLE_COLUMNS["websocket_messages"],
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
