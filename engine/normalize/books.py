"""Order book frames of every exchange as records: ``book_snapshot`` or ``book_delta``
with the instrument and, where the frame gives them, the best bid and ask. The frame
itself (every level) is the record's raw payload."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..models import Record
from .common import Context, make_record


def _level(levels: Any, price: str | int = 0, size: str | int = 1) -> tuple[Any, Any]:
    """(price, size) of the first level of ``levels`` (lists or objects), else Nones."""
    if not isinstance(levels, list) or not levels:
        return None, None
    first = levels[0]
    if isinstance(first, list | tuple) and len(first) >= 2:
        return first[int(price)], first[int(size)]
    if isinstance(first, dict):
        return first.get(str(price)), first.get(str(size))
    return None, None


def book_record(
    ctx: Context,
    received_at: datetime,
    payload: bytes,
    *,
    snapshot: bool,
    instrument: Any,
    bids: Any = None,
    asks: Any = None,
    timestamp: Any = None,
    key: Any = None,
    price_key: str | int = 0,
    size_key: str | int = 1,
) -> Record:
    """A book frame. Best bid/ask are the first levels of a snapshot (exchanges send them
    best first); a delta's levels are changes, not the best prices, so it has none."""
    bid_price = bid_size = ask_price = ask_size = None
    if snapshot:
        bid_price, bid_size = _level(bids, price_key, size_key)
        ask_price, ask_size = _level(asks, price_key, size_key)
    return make_record(
        ctx,
        received_at,
        payload,
        message_type="book_snapshot" if snapshot else "book_delta",
        instrument=instrument,
        timestamp=timestamp,
        key=key,
        bid_price=bid_price,
        bid_size=bid_size,
        ask_price=ask_price,
        ask_size=ask_size,
    )
