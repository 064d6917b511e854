"""Recognize a message by its shape, for connectors and saves whose exchange is ``custom``:
the original service's three shapes (OKX ``{arg, data: [...]}``, Binance
``{stream, data}`` or a bare event) and the event shapes of the other exchanges Sluice
knows. The record's ``exchange`` then names the exchange recognized; a message that
matches nothing goes through the generic normalizer, as before.

Only ``custom`` pays for this: a connector whose exchange is known calls its normalizer
directly (``normalizer_for``), and an explicit exchange or field mapping always wins.
The bench measures the detour in every run (``normalize_cost`` in ``bench/runner.py``,
a row of RESULTS.md's baselines): decode + normalize of a Binance trade took 5.1 to 5.4 µs
through ``binance`` and 6.7 µs through ``custom`` with a fresh context per message;
with the cached context below, 5.8 to 6.0 µs (≈ 0.6 µs, 11%, for the shape checks).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs

from ..models import Record
from .binance import normalize_binance
from .bitstamp import normalize_bitstamp
from .bybit import normalize_bybit
from .coinbase import normalize_coinbase
from .common import Context, Control, Normalizer
from .generic import normalize_generic
from .kraken import is_v1_frame, normalize_kraken
from .okx import normalize_okx

_BINANCE_EVENTS = frozenset(
    {"trade", "aggTrade", "24hrTicker", "24hrMiniTicker", "kline", "depthUpdate"}
)
_COINBASE_TYPES = frozenset({"match", "last_match", "ticker", "l2update", "snapshot"})
_COINBASE_CHANNELS = frozenset({"market_trades", "ticker", "l2_data", "level2"})
_KRAKEN_CHANNELS = frozenset({"trade", "ticker", "book"})
_BITSTAMP_PREFIXES = ("live_trades_", "order_book_", "diff_order_book_", "detail_order_book_")


def exchange_of(msg: Any) -> str | None:
    """The exchange whose shape ``msg`` has, or ``None``."""
    if isinstance(msg, list):
        return "kraken" if is_v1_frame(msg) else None
    if not isinstance(msg, dict):
        return None
    if "arg" in msg and isinstance(msg.get("data"), list):
        return "okx"
    if isinstance(msg.get("stream"), str) and isinstance(msg.get("data"), dict):
        return "binance"
    event = msg.get("e")
    if event in _BINANCE_EVENTS and "s" in msg:
        return "binance"
    if "u" in msg and "s" in msg and "b" in msg and "a" in msg and "e" not in msg:
        return "binance"  # bookTicker
    topic = msg.get("topic")
    if isinstance(topic, str) and "data" in msg:
        return "bybit"
    channel = msg.get("channel")
    if isinstance(channel, str):
        if channel.startswith(_BITSTAMP_PREFIXES) and "event" in msg:
            return "bitstamp"
        if channel in _COINBASE_CHANNELS and isinstance(msg.get("events"), list):
            return "coinbase"
        if channel in _KRAKEN_CHANNELS and isinstance(msg.get("data"), list):
            return "kraken"
    if msg.get("type") in _COINBASE_TYPES and "product_id" in msg:
        return "coinbase"
    return None


_BY_NAME: dict[str, Normalizer] = {
    "okx": normalize_okx,
    "binance": normalize_binance,
    "bybit": normalize_bybit,
    "bitstamp": normalize_bitstamp,
    "coinbase": normalize_coinbase,
    "kraken": normalize_kraken,
}


def normalize_detected(
    msg: Any, raw: bytes, ctx: Context, received_at: datetime
) -> list[Record] | Control:
    """A normalizer (see :mod:`engine.normalize`) that picks the exchange per message."""
    name = exchange_of(msg)
    if name is None:
        return normalize_generic(msg, raw, ctx, received_at)
    normalize: Callable[..., list[Record] | Control] = _BY_NAME[name]
    return normalize(msg, raw, _as(ctx, name), received_at)


@functools.lru_cache(maxsize=1024)
def _as(ctx: Context, exchange: str) -> Context:
    # One context per connector run and exchange, not one attrs.evolve per message.
    return attrs.evolve(ctx, exchange=exchange)
