"""Coinbase: the Exchange WebSocket feed (``ws-feed.exchange.coinbase.com``: ``match``,
``last_match``, ``ticker``) and Advanced Trade (``market_trades``, ``ticker`` channels).

In the Exchange feed ``side`` is the *maker's* side; records carry the taker's side, as
for the other exchanges. ``subscriptions`` and ``heartbeat(s)`` are control messages.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ..errors import BadMessage
from ..models import Record
from .books import book_record
from .common import ACK, Context, Control, make_record
from .generic import normalize_generic

_TAKER = {"buy": "sell", "sell": "buy"}


def normalize_coinbase(
    msg: Any, raw: bytes, ctx: Context, received_at: datetime
) -> list[Record] | Control:
    if not isinstance(msg, dict):
        return normalize_generic(msg, raw, ctx, received_at)
    kind = msg.get("type")
    if kind in ("match", "last_match"):
        product = msg.get("product_id")
        return [
            make_record(
                ctx,
                received_at,
                raw,
                message_type="trade",
                instrument=product,
                price=msg.get("price"),
                size=msg.get("size"),
                side=_TAKER.get(str(msg.get("side")).lower()),
                timestamp=msg.get("time"),
                key=msg.get("trade_id"),
            )
        ]
    if kind == "ticker":
        return [
            make_record(
                ctx,
                received_at,
                raw,
                message_type="ticker",
                instrument=msg.get("product_id"),
                price=msg.get("price"),
                size=msg.get("last_size"),
                side=msg.get("side"),
                timestamp=msg.get("time"),
                key=msg.get("sequence"),
                bid_price=msg.get("best_bid"),
                bid_size=msg.get("best_bid_size"),
                ask_price=msg.get("best_ask"),
                ask_size=msg.get("best_ask_size"),
            )
        ]
    if kind in ("snapshot", "l2update"):
        return [
            book_record(
                ctx,
                received_at,
                raw,
                snapshot=kind == "snapshot",
                instrument=msg.get("product_id"),
                bids=msg.get("bids"),
                asks=msg.get("asks"),
                timestamp=msg.get("time"),
            )
        ]
    if kind in ("subscriptions", "heartbeat"):
        return ACK
    if kind == "error":
        return Control("error", f"Coinbase error: {msg.get('message')} {msg.get('reason', '')}")
    channel = msg.get("channel")
    if channel in ("l2_data", "level2") and isinstance(msg.get("events"), list):
        return _advanced_books(msg, ctx, received_at)
    if channel in ("market_trades", "ticker", "ticker_batch") and "events" in msg:
        return _advanced(msg, channel, ctx, received_at)
    if channel in ("subscriptions", "heartbeats"):
        return ACK
    return normalize_generic(msg, raw, ctx, received_at)


def _advanced_books(msg: dict[str, Any], ctx: Context, received_at: datetime) -> list[Record]:
    """Advanced Trade ``l2_data``: each event a snapshot or update of price levels
    (``side`` bid/offer, ``price_level``, ``new_quantity``), in no promised order."""
    records = []
    for event in msg["events"]:
        if not isinstance(event, dict):
            raise BadMessage("bad_shape", "Coinbase event is not an object")
        updates = [u for u in event.get("updates") or [] if isinstance(u, dict)]
        levels = {
            side: sorted(
                (
                    [u.get("price_level"), u.get("new_quantity")]
                    for u in updates
                    if u.get("side") == side
                ),
                key=lambda level: float(level[0] or 0),
                reverse=side == "bid",
            )
            for side in ("bid", "offer")
        }
        records.append(
            book_record(
                ctx,
                received_at,
                orjson.dumps(event),
                snapshot=event.get("type") == "snapshot",
                instrument=event.get("product_id"),
                bids=levels["bid"],
                asks=levels["offer"],
                timestamp=msg.get("timestamp"),
            )
        )
    return records


def _advanced(
    msg: dict[str, Any], channel: str, ctx: Context, received_at: datetime
) -> list[Record]:
    events = msg.get("events")
    if not isinstance(events, list):
        raise BadMessage("bad_shape", "Coinbase events is not a list")
    records: list[Record] = []
    for event in events:
        items = (
            event.get("trades" if channel == "market_trades" else "tickers")
            if isinstance(event, dict)
            else None
        )
        if not isinstance(items, list):
            raise BadMessage("bad_shape", "Coinbase event has no list of trades or tickers")
        for item in items:
            if not isinstance(item, dict):
                raise BadMessage("bad_shape", "Coinbase item is not an object")
            payload = orjson.dumps(item)
            if channel == "market_trades":
                records.append(
                    make_record(
                        ctx,
                        received_at,
                        payload,
                        message_type="trade",
                        instrument=item.get("product_id"),
                        price=item.get("price"),
                        size=item.get("size"),
                        side=item.get("side"),
                        timestamp=item.get("time"),
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
                        instrument=item.get("product_id"),
                        price=item.get("price"),
                        timestamp=msg.get("timestamp"),
                        bid_price=item.get("best_bid"),
                        bid_size=item.get("best_bid_quantity"),
                        ask_price=item.get("best_ask"),
                        ask_size=item.get("best_ask_quantity"),
                    )
                )
    return records
