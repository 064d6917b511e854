"""Helpers every normalizer uses: exact decimals, times, keys, control messages.

Pure functions, no I/O: normalizers run on the hot path and build records directly.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import attrs

from ..errors import BadMessage
from ..models import Record

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


Normalizer = Callable[[Any, bytes, "Context", datetime], "list[Record] | Control"]
"""``(message, raw_bytes, context, received_at) -> records or a control message``."""

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
    if type(value) is int and 100_000_000_000 < value < 100_000_000_000_000:
        return datetime.fromtimestamp(value / 1000, UTC)  # the common case: epoch ms
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


def make_record(
    ctx: Context,
    received_at: datetime,
    payload: bytes,
    *,
    message_type: str,
    instrument: Any = None,
    price: Any = None,
    size: Any = None,
    side: Any = None,
    timestamp: Any = None,
    key: Any = None,
    bid_price: Any = None,
    bid_size: Any = None,
    ask_price: Any = None,
    ask_size: Any = None,
) -> Record:
    """A record from raw field values, each checked (exact decimals, sane text, a time).

    ``key`` is the source's own id for the record (trade id, sequence; any value, used as
    text); without one the idempotency key is a hash of the payload and its receive time.
    """
    inst = text_field(instrument, "instrument")
    return Record(
        connector_id=ctx.connector_id,
        exchange=ctx.exchange,
        instrument=inst,
        price=decimal_text(price, "price"),
        size=decimal_text(size, "size"),
        side=_side(side),
        message_type=message_type,
        timestamp=epoch_to_datetime(timestamp, "timestamp") or received_at,
        received_at=received_at,
        data=payload,
        dedup_key=f"{message_type[0]}:{inst}:{key}"
        if key is not None
        else content_key(payload, received_at),
        bid_price=decimal_text(bid_price, "bid_price"),
        bid_size=decimal_text(bid_size, "bid_size"),
        ask_price=decimal_text(ask_price, "ask_price"),
        ask_size=decimal_text(ask_size, "ask_size"),
    )


def _side(value: Any) -> str | None:
    side = text_field(value, "side")
    return side.lower() if side else side
