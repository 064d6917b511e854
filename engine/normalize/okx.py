"""OKX v5 public WebSocket messages: ``{"arg": {...}, "data": [...]}``.

One message may carry several records. Order book channels (``books``, ``books5``,
``bbo-tbt``, ``books-l2-tbt``, ``books50-l2-tbt``) are book records: ``action``
``snapshot`` (or none: ``books5``/``bbo-tbt`` always send the whole top) or ``update``.
``{"event": "subscribe"}`` and the text ``pong`` are control messages;
``{"event": "error"}`` is an error the exchange reports.
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
    make_record,
    text_field,
)
from .generic import normalize_generic

_ACK_EVENTS = frozenset({"subscribe", "unsubscribe", "login", "channel-conn-count"})


def normalize_okx(
    msg: Any, raw: bytes, ctx: Context, received_at: datetime
) -> list[Record] | Control:
    if not isinstance(msg, dict):
        return normalize_generic(msg, raw, ctx, received_at)
    data = msg.get("data")
    if data is None:
        event = msg.get("event")
        if event in _ACK_EVENTS:
            return ACK
        if event == "error":
            return Control("error", f"OKX error {msg.get('code')}: {msg.get('msg')}")
        return normalize_generic(msg, raw, ctx, received_at)
    if not isinstance(data, list):
        raise BadMessage("bad_shape", "OKX data is not a list")
    arg = msg.get("arg")
    channel = arg.get("channel", "") if isinstance(arg, dict) else ""
    arg_inst = arg.get("instId") if isinstance(arg, dict) else None
    records = []
    for item in data:
        if not isinstance(item, dict):
            raise BadMessage("bad_shape", "OKX data item is not an object")
        if channel.startswith(("books", "bbo")):
            records.append(
                book_record(
                    ctx,
                    received_at,
                    orjson.dumps(item),
                    snapshot=msg.get("action", "snapshot") == "snapshot",
                    instrument=item.get("instId", arg_inst),
                    bids=item.get("bids"),
                    asks=item.get("asks"),
                    timestamp=item.get("ts"),
                    key=item.get("seqId"),
                )
            )
            continue
        records.append(_record(item, channel, arg_inst, ctx, received_at))
    return records


def _record(
    item: dict[str, Any], channel: str, arg_inst: Any, ctx: Context, received_at: datetime
) -> Record:
    instrument = item.get("instId", arg_inst)
    payload = orjson.dumps(item)
    if channel.startswith("trades"):
        trade_id = text_field(item.get("tradeId"), "tradeId")
        return make_record(
            ctx,
            received_at,
            payload,
            message_type="trade",
            instrument=instrument,
            price=item.get("px"),
            size=item.get("sz"),
            side=item.get("side"),
            timestamp=item.get("ts"),
            key=trade_id or None,
        )
    if channel.startswith("tickers"):
        return make_record(
            ctx,
            received_at,
            payload,
            message_type="ticker",
            instrument=instrument,
            price=item.get("last"),
            size=item.get("lastSz"),
            timestamp=item.get("ts"),
            bid_price=item.get("bidPx"),
            bid_size=item.get("bidSz"),
            ask_price=item.get("askPx"),
            ask_size=item.get("askSz"),
        )
    return make_record(
        ctx,
        received_at,
        payload,
        message_type=channel or "message",
        instrument=instrument,
        price=item.get("px", item.get("last")),
        size=item.get("sz"),
        side=item.get("side"),
        timestamp=item.get("ts"),
    )
