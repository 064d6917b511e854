"""The commonest messages of the busiest feeds, decoded straight from their bytes into typed
structs (msgspec validates the shape in C) and built into records without a dict in
between. Pure.

A fast path only takes a message it is sure of: the exact shape (a Binance ``trade`` or
``aggTrade`` event with every field of the right type), no backslash anywhere in the
frame (so no escape, no ``\\u0000``, no lone surrogate: those the general path judges),
prices and sizes that are plain decimals, and an epoch-millisecond time. Anything else
returns ``None`` and takes the general path (``decode`` + the exchange's normalizer),
which counts and rejects what is wrong. The record is the one the general path builds,
field for field (``tests/test_normalize_fast.py`` holds the two together).

Measured in ``bench`` (max-1, the Binance firehose): see ``bench/README.md``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from ..models import Record
from .common import EPOCH_MS_HIGH, EPOCH_MS_LOW, Context, plain_decimal


class _Trade(msgspec.Struct, tag_field="e", tag="trade"):
    s: str
    t: int
    p: str
    q: str
    T: int
    m: bool | None = None


class _AggTrade(msgspec.Struct, tag_field="e", tag="aggTrade"):
    s: str
    a: int
    p: str
    q: str
    T: int
    m: bool | None = None


_BINANCE = msgspec.json.Decoder(_Trade | _AggTrade)


#: Decimal texts already checked: prices and sizes repeat (a price level, a lot size), and
#: a set lookup is a tenth of the regex. Bounded: emptied when it grows past _KNOWN_MAX.
_known: set[str] = set()
_KNOWN_MAX = 100_000


def _decimal(text: str) -> bool:
    if text in _known:
        return True
    if plain_decimal(text):
        if len(_known) >= _KNOWN_MAX:
            _known.clear()
        _known.add(text)
        return True
    return False


_last_time: list[tuple[int, datetime]] = [(0, datetime.fromtimestamp(0, UTC))]


def _time(ms: int) -> datetime:
    """Epoch milliseconds as a datetime; a burst of trades shares its millisecond."""
    last = _last_time[0]
    if last[0] == ms:
        return last[1]
    when = datetime.fromtimestamp(ms / 1000, UTC)
    _last_time[0] = (ms, when)
    return when


def binance_trade(raw: bytes, ctx: Context, received_at: datetime) -> list[Record] | None:
    """A raw Binance trade or aggTrade event as its record, or ``None`` (not sure: use the
    general path)."""
    if b"\\" in raw:
        return None
    try:
        event = _BINANCE.decode(raw)
    except msgspec.DecodeError:  # also a shape it does not know (ValidationError)
        return None
    if (
        len(event.s) > 200
        or not _decimal(event.p)
        or not _decimal(event.q)
        or not EPOCH_MS_LOW < event.T < EPOCH_MS_HIGH
    ):
        return None
    if isinstance(event, _Trade):
        trade_id, prefix = event.t, "t:"
    else:
        trade_id, prefix = event.a, "a:"
    maker = event.m
    return [
        Record(
            ctx.connector_id,
            "binance",
            event.s,
            event.p,
            event.q,
            None if maker is None else ("sell" if maker else "buy"),
            "trade",
            _time(event.T),
            received_at,
            raw,
            f"{prefix}{event.s}:{trade_id}",
            source_id=str(trade_id),
            session_id=ctx.session_id,
        )
    ]


#: By connector exchange: a connector of unknown exchange (``custom``) would recognize a
#: Binance trade by its shape too, and name the record's exchange ``binance`` the same way.
FAST_PATHS = {"binance": binance_trade, "custom": binance_trade}
