"""Kraken WebSocket API v2 (``wss://ws.kraken.com/v2``): ``trade`` and ``ticker``
channels. Prices arrive as JSON numbers; they keep their shortest exact text.

``status`` and ``heartbeat`` channels and method answers (``subscribe``, ``pong``) are
control messages; a method answer with ``success: false`` is an exchange error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ..errors import BadMessage
from ..models import Record
from .common import ACK, PONG, Context, Control, make_record
from .generic import normalize_generic


def normalize_kraken(
    msg: Any, raw: bytes, ctx: Context, received_at: datetime
) -> list[Record] | Control:
    if not isinstance(msg, dict):
        return normalize_generic(msg, raw, ctx, received_at)
    method = msg.get("method")
    if method is not None:
        if msg.get("success") is False:
            return Control("error", f"Kraken error: {msg.get('error')}")
        return PONG if method == "pong" else ACK
    channel = msg.get("channel")
    if channel in ("status", "heartbeat"):
        return ACK
    if channel not in ("trade", "ticker"):
        return normalize_generic(msg, raw, ctx, received_at)
    data = msg.get("data")
    if not isinstance(data, list):
        raise BadMessage("bad_shape", "Kraken data is not a list")
    records = []
    for item in data:
        if not isinstance(item, dict):
            raise BadMessage("bad_shape", "Kraken data item is not an object")
        payload = orjson.dumps(item)
        if channel == "trade":
            records.append(
                make_record(
                    ctx,
                    received_at,
                    payload,
                    message_type="trade",
                    instrument=item.get("symbol"),
                    price=item.get("price"),
                    size=item.get("qty"),
                    side=item.get("side"),
                    timestamp=item.get("timestamp"),
                    key=item.get("trade_id"),
                )
            )
        else:
            records.append(
                make_record(
                    ctx,
                    received_at,
                    payload,
                    message_type="ticker",
                    instrument=item.get("symbol"),
                    price=item.get("last"),
                    timestamp=item.get("timestamp"),
                    bid_price=item.get("bid"),
                    bid_size=item.get("bid_qty"),
                    ask_price=item.get("ask"),
                    ask_size=item.get("ask_qty"),
                )
            )
    return records
