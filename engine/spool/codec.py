"""A batch of records as one spool entry's payload (JSON; the raw payload as a string, so
its bytes come back exactly, numbers' digits included), and back. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ..models import RECORD_FIELDS, Record

_FIELDS = [name for name in RECORD_FIELDS if name != "data"]


def encode_records(records: list[Record]) -> bytes:
    rows = []
    for r in records:
        row: dict[str, Any] = {name: getattr(r, name) for name in _FIELDS}
        row["data"] = r.data.decode("utf-8", "surrogatepass")
        rows.append(row)
    return orjson.dumps(rows)


def decode_records(payload: bytes) -> list[Record]:
    out = []
    for row in orjson.loads(payload):
        data = row.pop("data").encode("utf-8", "surrogatepass")
        row["timestamp"] = datetime.fromisoformat(row["timestamp"])
        row["received_at"] = datetime.fromisoformat(row["received_at"])
        out.append(Record(data=data, **row))
    return out
