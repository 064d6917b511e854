"""Bitstamp WebSocket API v2 (``wss://ws.bitstamp.net``): ``trade`` events of the
``live_trades_<pair>`` channels, and ``data`` events of ``order_book_<pair>`` (the top of
the book, a snapshot every time) and ``diff_order_book_<pair>`` (changes) as book records.
The instrument is only in the channel name. Exact digits come from ``price_str``/``amount_str``;
``type`` 0 is a buy, 1 a sell (the taker's side). ``bts:subscription_succeeded`` is a
control message, ``bts:error`` an exchange error."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import BadMessage
from ..models import Record
from .books import book_record
from .common import ACK, Context, Control, make_record
from .generic import normalize_generic

_SIDES = {0: "buy", 1: "sell"}
_BOOK_CHANNELS = ("order_book_", "diff_order_book_", "detail_order_book_")
_PREFIXES = ("live_trades_", "live_orders_", *_BOOK_CHANNELS[::-1])


def instrument_of(channel: str) -> str | None:
    """``order_book_ethusd`` → ``ethusd``: the pair a channel is about."""
    for prefix in _PREFIXES:
        if channel.startswith(prefix):
            return channel[len(prefix) :] or None
    return None


def normalize_bitstamp(
    msg: Any, raw: bytes, ctx: Context, received_at: datetime
) -> list[Record] | Control:
    if not isinstance(msg, dict):
        return normalize_generic(msg, raw, ctx, received_at)
    event = msg.get("event")
    if event in ("bts:subscription_succeeded", "bts:unsubscription_succeeded", "bts:heartbeat"):
        return ACK
    if event == "bts:error":
        data = msg.get("data")
        detail = data.get("message") if isinstance(data, dict) else data
        return Control("error", f"Bitstamp error: {detail}")
    if event == "bts:request_reconnect":
        return Control("error", "Bitstamp asked for a reconnect")
    channel = str(msg.get("channel", ""))
    if event == "data" and channel.startswith(_BOOK_CHANNELS):
        data = msg.get("data")
        if not isinstance(data, dict):
            raise BadMessage("bad_shape", "Bitstamp book data is not an object")
        return [
            book_record(
                ctx,
                received_at,
                raw,
                snapshot=not channel.startswith("diff_"),
                instrument=instrument_of(channel),
                bids=data.get("bids"),
                asks=data.get("asks"),
                timestamp=data.get("microtimestamp", data.get("timestamp")),
            )
        ]
    if event != "trade":
        return normalize_generic(msg, raw, ctx, received_at)
    data = msg.get("data")
    if not isinstance(data, dict):
        raise BadMessage("bad_shape", "Bitstamp trade data is not an object")
    return [
        make_record(
            ctx,
            received_at,
            raw,
            message_type="trade",
            instrument=instrument_of(channel),
            price=data.get("price_str", data.get("price")),
            size=data.get("amount_str", data.get("amount")),
            side=_SIDES.get(data.get("type")),  # type: ignore[arg-type]
            timestamp=data.get("microtimestamp", data.get("timestamp")),
            key=data.get("id"),
        )
    ]
