"""Bybit public streams, v5 and the older unified topics it still serves:
``publicTrade.<symbol>``, ``tickers.<symbol>`` and ``orderbook.<depth>.<symbol>`` (v5);
``trade.<symbol>`` and ``orderBookL2_25.<symbol>`` / ``orderBook_200.100ms.<symbol>``
(older; snapshots are lists of levels, deltas ``delete``/``update``/``insert``). The
instrument falls back to the topic's last segment. Operation answers
(``{"op": "subscribe", "success": true}``, pong) are control messages;
``success: false`` is an exchange error."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ..errors import BadMessage
from ..models import Record
from .books import book_record
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
    symbol = topic.rsplit(".", 1)[-1]
    if topic.startswith("trade."):
        if not isinstance(data, list):
            raise BadMessage("bad_shape", "Bybit trade data is not a list")
        return [
            make_record(
                ctx,
                received_at,
                orjson.dumps(item),
                message_type="trade",
                instrument=item.get("symbol", symbol),
                price=item.get("price"),
                size=item.get("size"),
                side=item.get("side"),
                timestamp=item.get("trade_time_ms", item.get("timestamp")),
                key=item.get("trade_id"),
            )
            for item in data
            if isinstance(item, dict)
        ]
    if topic.startswith("orderbook."):
        if not isinstance(data, dict):
            raise BadMessage("bad_shape", "Bybit orderbook data is not an object")
        return [
            book_record(
                ctx,
                received_at,
                raw,
                snapshot=msg.get("type") == "snapshot",
                instrument=data.get("s", symbol),
                bids=data.get("b"),
                asks=data.get("a"),
                timestamp=msg.get("ts"),
                key=data.get("u") if msg.get("type") != "snapshot" else None,
            )
        ]
    if topic.startswith(("orderBookL2_", "orderBook_")):
        snapshot = msg.get("type") == "snapshot" or isinstance(data, list)
        levels = [lv for lv in data if isinstance(lv, dict)] if isinstance(data, list) else []
        bids = [[lv.get("price"), lv.get("size")] for lv in levels if lv.get("side") == "Buy"]
        asks = [[lv.get("price"), lv.get("size")] for lv in levels if lv.get("side") == "Sell"]
        bids.sort(key=lambda lv: -float(lv[0] or 0))
        asks.sort(key=lambda lv: float(lv[0] or 0))
        return [
            book_record(
                ctx,
                received_at,
                raw,
                snapshot=snapshot,
                instrument=symbol,
                bids=bids,
                asks=asks,
                timestamp=msg.get("timestamp_e6", msg.get("ts")),
            )
        ]
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
