"""Turn raw source messages into :class:`~engine.models.Record` values.

Each normalizer is a plain function ``(message, raw_bytes, context, received_at)`` that
returns a list of records or a :class:`Control` (ack, pong, exchange error), and raises
:class:`~engine.errors.BadMessage` for a message it cannot use. :func:`decode` turns a raw
frame into ``(message, raw_bytes)`` and classifies undecodable frames.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import BadMessage
from .binance import normalize_binance
from .bitstamp import normalize_bitstamp
from .bybit import normalize_bybit
from .coinbase import normalize_coinbase
from .common import ACK, PONG, Context, Control, Normalizer
from .detect import normalize_detected
from .generic import normalize_generic
from .kraken import normalize_kraken
from .mapping import FieldMapping, mapped_normalizer
from .okx import normalize_okx

NORMALIZERS: dict[str, Normalizer] = {
    "okx": normalize_okx,
    "binance": normalize_binance,
    "coinbase": normalize_coinbase,
    "kraken": normalize_kraken,
    "bybit": normalize_bybit,
    "bitstamp": normalize_bitstamp,
}

__all__ = [
    "ACK",
    "PONG",
    "Context",
    "Control",
    "FieldMapping",
    "Normalizer",
    "decode",
    "normalizer_for",
]


def normalizer_for(exchange: str, mapping: dict[str, str] | None = None) -> Normalizer:
    """The normalizer for a connector: its field mapping if it has one, else the
    exchange's own; ``custom`` recognizes each message's shape (``detect``); any other
    exchange gets the generic one."""
    if mapping:
        return mapped_normalizer(FieldMapping.from_dict(mapping))
    if exchange == "custom":
        return normalize_detected
    return NORMALIZERS.get(exchange, normalize_generic)


def decode(frame: bytes | str) -> tuple[Any, bytes]:
    """Parse one frame as JSON, returning the value and the frame as UTF-8 bytes.

    ``pong`` (OKX's answer to its text ``ping``) decodes to the string ``"pong"``.
    """
    raw = frame if isinstance(frame, bytes) else frame.encode("utf-8", "surrogatepass")
    if raw == b"pong":
        return "pong", raw
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadMessage("invalid_utf8", "frame is not valid UTF-8") from None
        raise BadMessage("non_json", "frame is not valid JSON") from None
    if b"\\u0000" in raw:
        raise BadMessage("nul_character", "PostgreSQL cannot store \\u0000 in JSON")
    return value, raw
