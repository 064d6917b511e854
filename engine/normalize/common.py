"""Helpers every normalizer uses: exact decimals, times, keys, control messages.

Pure functions, no I/O: normalizers run on the hot path and build records directly.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import attrs

from ..errors import BadMessage

_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_MAX_DECIMAL_CHARS = 64
# PostgreSQL numeric holds up to 131072 digits before the point; sane prices are far smaller.
_MAX_EXPONENT = 1000


@attrs.frozen
class Control:
    """A message that is not market data: a subscription acknowledgement, a pong, or an
    error the exchange reported. Counted, never stored as a record."""

    kind: Literal["ack", "pong", "error"]
    detail: str = ""


ACK = Control("ack")
PONG = Control("pong")


@attrs.frozen
class Context:
    """What a normalizer knows about where a message came from."""

    connector_id: str | None
    exchange: str


def decimal_text(value: Any, field: str) -> str | None:
    """Return ``value`` as exact decimal text, or ``None`` if absent.

    Strings are kept digit for digit (``"0.10"`` stays ``"0.10"``); JSON numbers arrive as
    int or float and use their shortest round-trip text. Anything else, NaN, infinities,
    and absurd magnitudes raise :class:`BadMessage`.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if len(value) <= _MAX_DECIMAL_CHARS and _DECIMAL.fullmatch(value):
            return value
        return _checked_decimal(value, field)
    if isinstance(value, bool):
        raise BadMessage("bad_value", f"{field} is a boolean")
    if isinstance(value, int):
        if abs(value) >= 10**_MAX_DECIMAL_CHARS:
            raise BadMessage("bad_value", f"{field} is out of range")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadMessage("bad_value", f"{field} is not finite")
        return repr(value)
    raise BadMessage("bad_value", f"{field} is not a number")


def _checked_decimal(text: str, field: str) -> str:
    if len(text) > 2 * _MAX_DECIMAL_CHARS:
        raise BadMessage("bad_value", f"{field} is too long")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise BadMessage("bad_value", f"{field} is not a decimal number") from None
    if not number.is_finite() or abs(number.adjusted()) > _MAX_EXPONENT:
        raise BadMessage("bad_value", f"{field} is not a finite decimal in range")
    return text.strip()


def epoch_to_datetime(value: Any, field: str) -> datetime | None:
    """Exchange timestamps: epoch seconds, milliseconds, microseconds or nanoseconds (by
    magnitude), as a number or a digit string; or an ISO 8601 string."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadMessage("bad_value", f"{field} is a boolean")
    if isinstance(value, str):
        if value.isdigit():
            value = int(value)
        else:
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    raise BadMessage("bad_value", f"{field} is not a time") from None
            else:
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise BadMessage("bad_value", f"{field} is not a time")
    seconds = float(value)
    while seconds > 1e11:  # ms, µs or ns since the epoch
        seconds /= 1000
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise BadMessage("bad_value", f"{field} is out of range") from None


def text_field(value: Any, field: str) -> str | None:
    """A short identifier (instrument, side): strings pass, numbers become text."""
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) > 200:
            raise BadMessage("bad_value", f"{field} is too long")
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise BadMessage("bad_value", f"{field} is not a string")


def content_key(payload: bytes, received_at: datetime) -> str:
    """Idempotency key for records without a source id: distinct arrivals never collide,
    while a retried insert of the same record does."""
    digest = hashlib.blake2b(payload, digest_size=16)
    digest.update(received_at.isoformat().encode())
    return "h:" + digest.hexdigest()
