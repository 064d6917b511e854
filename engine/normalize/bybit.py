"""Bybit v5 public streams: ``publicTrade.<symbol>`` and ``tickers.<symbol>`` (spot and
derivatives). Operation answers (``{"op": "subscribe", "success": true}``, pong) are
control messages; ``success: false`` is an exchange error."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ..errors import BadMessage
from ..models import Record
from .common import ACK, PONG, Context, Control, make_record
from .generic import normalize_generic


def normalize_bybit(
    msg: Any, raw: bytes, ctx: Context, received_at: datetime
) -> list[Record] | Control:
    if not isinstance(msg, dict):
        return normalize_generic(msg, raw, ctx, received_at)
    if "op" in msg and "topic" not in msg:
        if msg.get("success") is False:
            return Control("error", f"Bybit error: {msg.get('ret_msg')}")
        return PONG if msg.get("op") in ("ping", "pong") else ACK
    topic = msg.get("topic")
    if not isinstance(topic, str):
        return normalize_generic(msg, raw, ctx, received_at)
    data = msg.get("data")
    if topic.startswith("publicTrade."):
        if not isinstance(data, list):
            raise BadMessage("bad_shape", "Bybit trade data is not a list")
        records = []
        for item in data:
            if not isinstance(item, dict):
                raise BadMessage("bad_shape", "Bybit trade is not an object")
            records.append(
                make_record(
                    ctx,
                    received_at,
                    orjson.dumps(item),
                    message_type="trade",
                    instrument=item.get("s"),
                    price=item.get("p"),
                    size=item.get("v"),
                    side=item.get("S"),
                    timestamp=item.get("T"),
                    key=item.get("i"),
                )
            )
        return records
    if topic.startswith("tickers."):
        if not isinstance(data, dict):
            raise BadMessage("bad_shape", "Bybit ticker data is not an object")
        return [
            make_record(
                ctx,
                received_at,
                orjson.dumps(data),
                message_type="ticker",
                instrument=data.get("symbol"),
                price=data.get("lastPrice"),
                timestamp=msg.get("ts"),
                bid_price=data.get("bid1Price"),
                bid_size=data.get("bid1Size"),
                ask_price=data.get("ask1Price"),
                ask_size=data.get("ask1Size"),
            )
        ]
    return normalize_generic(msg, raw, ctx, received_at)
