"""Binance spot WebSocket events, raw (``{"e": "trade", ...}``) or in the combined-stream
envelope ``{"stream": "btcusdt@trade", "data": {...}}``.

``{"result": null, "id": 1}`` answers a SUBSCRIBE request (control); ``{"error": ...}`` is an
error the exchange reports. Other event types are kept with the generic field guesses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ..models import Record
from .common import (
    ACK,
    Context,
    Control,
    content_key,
    decimal_text,
    epoch_to_datetime,
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
    if kind is None:
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
    )
