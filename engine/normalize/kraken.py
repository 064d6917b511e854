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
from .books import book_record
from .common import ACK, PONG, Context, Control, make_record
from .generic import normalize_generic

_V1_SIDES = {"b": "buy", "s": "sell"}


def is_v1_frame(msg: Any) -> bool:
    """``[channelID, payload..., channelName, pair]``: Kraken v1's data frame."""
    return (
        isinstance(msg, list)
        and 4 <= len(msg) <= 5
        and isinstance(msg[0], int)
        and isinstance(msg[-1], str)
        and isinstance(msg[-2], str)
    )


def _v1(msg: list[Any], raw: bytes, ctx: Context, received_at: datetime) -> list[Record]:
    channel, pair = msg[-2], msg[-1]
    payloads = msg[1:-2]
    if channel == "trade":
        trades = payloads[0]
        if not isinstance(trades, list):
            raise BadMessage("bad_shape", "Kraken v1 trade payload is not a list")
        records = []
        for trade in trades:
            if not isinstance(trade, list) or len(trade) < 4:
                raise BadMessage("bad_shape", "Kraken v1 trade is not a list of 6")
            records.append(
                make_record(
                    ctx,
                    received_at,
                    orjson.dumps(trade),
                    message_type="trade",
                    instrument=pair,
                    price=trade[0],
                    size=trade[1],
                    side=_V1_SIDES.get(trade[3]),
                    timestamp=trade[2],
                    key=trade[6] if len(trade) > 6 else None,
                )
            )
        return records
    if channel.startswith("book"):
        sides: dict[str, Any] = {}
        for part in payloads:
            if isinstance(part, dict):
                sides.update(part)
        snapshot = "as" in sides or "bs" in sides
        return [
            book_record(
                ctx,
                received_at,
                raw,
                snapshot=snapshot,
                instrument=pair,
                bids=sides.get("bs"),
                asks=sides.get("as"),
            )
        ]
    payload = payloads[0]
    if channel == "ticker" and isinstance(payload, dict):
        ask, bid, last = payload.get("a") or [], payload.get("b") or [], payload.get("c") or []
        return [
            make_record(
                ctx,
                received_at,
                raw,
                message_type="ticker",
                instrument=pair,
                price=last[0] if last else None,
                size=last[1] if len(last) > 1 else None,
                bid_price=bid[0] if bid else None,
                bid_size=bid[2] if len(bid) > 2 else None,
                ask_price=ask[0] if ask else None,
                ask_size=ask[2] if len(ask) > 2 else None,
            )
        ]
    if channel == "spread" and isinstance(payload, list) and len(payload) >= 5:
        return [
            make_record(
                ctx,
                received_at,
                raw,
                message_type="spread",
                instrument=pair,
                timestamp=payload[2],
                bid_price=payload[0],
                bid_size=payload[3],
                ask_price=payload[1],
                ask_size=payload[4],
            )
        ]
    if channel.startswith("ohlc") and isinstance(payload, list) and len(payload) >= 8:
        return [
            make_record(
                ctx,
                received_at,
                raw,
                message_type="kline",
                instrument=pair,
                price=payload[5],
                size=payload[7],
                timestamp=payload[0],
            )
        ]
    raise BadMessage("bad_shape", f"Kraken v1 {channel} frame has an unknown payload")


def normalize_kraken(
    msg: Any, raw: bytes, ctx: Context, received_at: datetime
) -> list[Record] | Control:
    if is_v1_frame(msg):
        return _v1(msg, raw, ctx, received_at)
    if not isinstance(msg, dict):
        return normalize_generic(msg, raw, ctx, received_at)
    event = msg.get("event")
    if isinstance(event, str):  # v1 events
        if event == "subscriptionStatus" and msg.get("status") == "error":
            return Control("error", f"Kraken error: {msg.get('errorMessage')}")
        return PONG if event == "pong" else ACK
    method = msg.get("method")
    if method is not None:
        if msg.get("success") is False:
            return Control("error", f"Kraken error: {msg.get('error')}")
        return PONG if method == "pong" else ACK
    channel = msg.get("channel")
    if channel in ("status", "heartbeat"):
        return ACK
    if channel not in ("trade", "ticker", "book"):
        return normalize_generic(msg, raw, ctx, received_at)
    data = msg.get("data")
    if not isinstance(data, list):
        raise BadMessage("bad_shape", "Kraken data is not a list")
    if channel == "book":
        snapshot = msg.get("type") == "snapshot"
        return [
            book_record(
                ctx,
                received_at,
                orjson.dumps(item),
                snapshot=snapshot,
                instrument=item.get("symbol"),
                bids=item.get("bids"),
                asks=item.get("asks"),
                timestamp=item.get("timestamp"),
                price_key="price",
                size_key="qty",
            )
            for item in data
            if isinstance(item, dict)
        ]
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
