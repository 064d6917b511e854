"""Any JSON source: one record per object (or per object of a top-level array), with the
exchange taken from the connector and the raw payload kept.

Columns are filled from the field names such feeds commonly use; a record whose fields
cannot be recognised is still stored, with only ``data`` set.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ..errors import BadMessage
from ..models import Record
from .common import PONG, Context, Control, content_key, decimal_text, epoch_to_datetime, text_field

INSTRUMENT_KEYS = ("instrument", "symbol", "instId", "product_id", "pair", "s", "market")
PRICE_KEYS = ("price", "px", "p", "last", "last_price", "rate")
SIZE_KEYS = ("size", "sz", "qty", "quantity", "q", "amount", "volume")
TIME_KEYS = ("timestamp", "ts", "time", "T", "E", "datetime")
TYPE_KEYS = ("type", "e", "event", "channel")


def normalize_generic(
    msg: Any, raw: bytes, ctx: Context, received_at: datetime
) -> list[Record] | Control:
    if isinstance(msg, dict):
        return [_record(msg, raw, ctx, received_at)]
    if isinstance(msg, list):
        records = []
        for item in msg:
            if not isinstance(item, dict):
                raise BadMessage("bad_shape", "array item is not an object")
            records.append(_record(item, orjson.dumps(item), ctx, received_at))
        return records
    if msg == "pong":
        return PONG
    raise BadMessage("bad_shape", f"expected a JSON object or array, got {type(msg).__name__}")


def _first(obj: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = obj.get(key)
        if value is not None:
            return value
    return None


def _record(obj: dict[str, Any], payload: bytes, ctx: Context, received_at: datetime) -> Record:
    kind = _first(obj, TYPE_KEYS)
    return Record(
        connector_id=ctx.connector_id,
        exchange=ctx.exchange,
        instrument=text_field(_first(obj, INSTRUMENT_KEYS), "instrument"),
        price=decimal_text(_first(obj, PRICE_KEYS), "price"),
        size=decimal_text(_first(obj, SIZE_KEYS), "size"),
        side=text_field(obj.get("side"), "side"),
        message_type=kind if isinstance(kind, str) and len(kind) <= 64 else "message",
        timestamp=epoch_to_datetime(_first(obj, TIME_KEYS), "timestamp") or received_at,
        received_at=received_at,
        data=payload,
        dedup_key=content_key(payload, received_at),
        session_id=ctx.session_id,
    )
