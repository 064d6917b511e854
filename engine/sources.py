"""What a source URL says about itself: the protocol (from the scheme) and the exchange
(from the host). Pure functions."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from .models import Protocol

KNOWN_EXCHANGES = (
    "okx",
    "binance",
    "coinbase",
    "kraken",
    "bybit",
    "bitstamp",
    "bitfinex",
    "kucoin",
    "gemini",
    "huobi",
    "htx",
    "gateio",
    "deribit",
    "bitmex",
    "mexc",
)
SCHEMES: dict[str, Protocol] = {
    "ws": "websocket",
    "wss": "websocket",
    "http": "rest",
    "https": "rest",
}


def protocol_for(url: str) -> Protocol | None:
    """``"websocket"`` for ws/wss, ``"rest"`` for http/https, ``None`` otherwise."""
    return SCHEMES.get(urlsplit(url).scheme.lower())


def detect_exchange(url: str) -> str:
    """The exchange whose name is a label of the URL's host (``ws.okx.com`` → ``okx``),
    else ``custom``."""
    host = (urlsplit(url).hostname or "").lower()
    labels = host.replace("-", ".").split(".")
    for name in KNOWN_EXCHANGES:
        if name in labels:
            return name
    for name in KNOWN_EXCHANGES:  # e.g. "stream.binancefuture.com", "okex"
        if any(label.startswith(name) for label in labels):
            return name
    return "custom"


def new_session_id() -> str:
    """An id for one connector run (``sess_`` + 12 hex digits), new on every start."""
    return "sess_" + secrets.token_hex(6)
