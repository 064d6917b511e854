"""Binance spot WebSocket events, raw (``{"e": "trade", ...}``) or in the combined-stream
envelope ``{"stream": "btcusdt@trade", "data": {...}}``: trade, aggTrade, bookTicker,
24hrTicker, 24hrMiniTicker and kline; order books as book records: ``depthUpdate`` (diff
depth, a delta) and partial depth ``{"lastUpdateId", "bids", "asks"}`` (a snapshot whose
symbol is only in the stream name, ``btcusdt@depth5``).

``{"result": null, "id": 1}`` answers a SUBSCRIBE request (control); ``{"error": ...}`` is an
error the exchange reports. Other event types are kept with the generic field guesses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ..errors import BadMessage
from ..models import Record
from .books import book_record
from .common import (
    ACK,
    Context,
    Control,
    content_key,
    decimal_text,
    epoch_to_datetime,
    make_record,
    text_field,
)
from .generic import normalize_generic


def normalize_binance(
    msg: Any, raw: bytes, ctx: Context, received_at: datetime
) -> list[Record] | Control:
    if not isinstance(msg, dict):
        return normalize_generic(msg, raw, ctx, received_at)
    event = msg
    payload = raw
    inner = msg.get("data")
    if "stream" in msg and isinstance(inner, dict):
        event = inner
        payload = orjson.dumps(inner)
    kind = event.get("e")
    if kind == "trade" or kind == "aggTrade":
        return [_trade(event, kind, payload, ctx, received_at)]
    if kind == "depthUpdate":
        return [
            book_record(
                ctx,
                received_at,
                payload,
                snapshot=False,
                instrument=event.get("s"),
                timestamp=event.get("E"),
                key=event.get("u"),
            )
        ]
    if kind is None and "lastUpdateId" in event and "bids" in event and "asks" in event:
        stream = msg.get("stream")
        symbol = stream.split("@", 1)[0].upper() if isinstance(stream, str) else None
        return [
            book_record(
                ctx,
                received_at,
                payload,
                snapshot=True,
                instrument=event.get("s", symbol),
                bids=event.get("bids"),
                asks=event.get("asks"),
                key=event.get("lastUpdateId"),
            )
        ]
    if kind == "24hrTicker" or kind == "24hrMiniTicker":
        full = kind == "24hrTicker"
        return [
            make_record(
                ctx,
                received_at,
                payload,
                message_type="ticker" if full else "mini_ticker",
                instrument=event.get("s"),
                price=event.get("c"),
                size=event.get("Q") if full else None,
                timestamp=event.get("E"),
                bid_price=event.get("b") if full else None,
                bid_size=event.get("B") if full else None,
                ask_price=event.get("a") if full else None,
                ask_size=event.get("A") if full else None,
            )
        ]
    if kind == "kline":
        kline = event.get("k")
        if not isinstance(kline, dict):
            raise BadMessage("bad_shape", "Binance kline has no 'k' object")
        return [
            make_record(
                ctx,
                received_at,
                payload,
                message_type="kline",
                instrument=event.get("s"),
                price=kline.get("c"),
                size=kline.get("v"),
                timestamp=kline.get("t"),
            )
        ]
    if kind is None:
        if "u" in event and "b" in event and "a" in event and "s" in event:
            # bookTicker has no event type: best bid/ask with an update id.
            return [
                make_record(
                    ctx,
                    received_at,
                    payload,
                    message_type="book_ticker",
                    instrument=event.get("s"),
                    key=event.get("u"),
                    bid_price=event.get("b"),
                    bid_size=event.get("B"),
                    ask_price=event.get("a"),
                    ask_size=event.get("A"),
                )
            ]
        if "result" in event and "id" in event:
            return ACK
        if "error" in event:
            error = event["error"]
            detail = error.get("msg") if isinstance(error, dict) else error
            return Control("error", f"Binance error: {detail}")
    if payload is not raw:
        return normalize_generic(event, payload, ctx, received_at)
    return normalize_generic(msg, raw, ctx, received_at)


def _trade(
    event: dict[str, Any], kind: str, payload: bytes, ctx: Context, received_at: datetime
) -> Record:
    instrument = text_field(event.get("s"), "s")
    trade_id = event.get("t") if kind == "trade" else event.get("a")
    maker = event.get("m")
    # "m": the buyer is the market maker, so the aggressor (taker) sold.
    side = None if maker is None else ("sell" if maker else "buy")
    key = (
        f"{'t' if kind == 'trade' else 'a'}:{instrument}:{trade_id}"
        if trade_id is not None
        else content_key(payload, received_at)
    )
    return Record(
        connector_id=ctx.connector_id,
        exchange=ctx.exchange,
        instrument=instrument,
        price=decimal_text(event.get("p"), "p"),
        size=decimal_text(event.get("q"), "q"),
        side=side,
        message_type="trade",
        timestamp=epoch_to_datetime(event.get("T", event.get("E")), "T") or received_at,
        received_at=received_at,
        data=payload,
        dedup_key=key,
        source_id=None if trade_id is None else str(trade_id),
        session_id=ctx.session_id,
    )
