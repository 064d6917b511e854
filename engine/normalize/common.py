"""Helpers every normalizer uses: exact decimals, times, keys, control messages.

Pure functions, no I/O: normalizers run on the hot path and build records directly.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import attrs

from ..errors import BadMessage
from ..models import Record

# Decimal text that is also a JSON number, so records can be sent as JSON numbers with the
# source's own digits. Other spellings ("+1", ".5", "1.", "1e5") go through Decimal and come
# out in its canonical text, which is a JSON number with the same value and scale.
_DECIMAL = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?")
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
    session_id: str | None = None


def decimal_text(value: Any, field: str) -> str | None:
    """Return ``value`` as exact decimal text that is also valid JSON number text, or
    ``None`` if absent.

    Strings are kept digit for digit (``"0.10"`` stays ``"0.10"``; ``"+1.50"`` becomes
    ``"1.50"``); JSON numbers arrive as int or float and use their shortest round-trip
    text (exact for up to 15 significant digits; trailing zeros are not kept). Anything
    else, NaN, infinities, and absurd magnitudes raise :class:`BadMessage`.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if plain_decimal(value):
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


def plain_decimal(text: str) -> bool:
    """``text`` is decimal text kept as it is: valid JSON number text, no exponent, no
    leading zeros, not too long."""
    return len(text) <= _MAX_DECIMAL_CHARS and _DECIMAL.fullmatch(text) is not None


def _checked_decimal(text: str, field: str) -> str:
    if len(text) > 2 * _MAX_DECIMAL_CHARS:
        raise BadMessage("bad_value", f"{field} is too long")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise BadMessage("bad_value", f"{field} is not a decimal number") from None
    if not number.is_finite() or abs(number.adjusted()) > _MAX_EXPONENT:
        raise BadMessage("bad_value", f"{field} is not a finite decimal in range")
    return str(number)


#: Time text accepted everywhere (query filters, saved timestamps): epoch digits (seconds,
#: ms, µs or ns by magnitude) or an RFC 3339 / ISO 8601 date-time.
EPOCH_DIGITS = r"^[0-9]{1,19}$"
TIME_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": EPOCH_DIGITS},
    ]
}
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?)?"
)


def parse_time(text: str) -> datetime | None:
    """Epoch digits or an RFC 3339 / ISO 8601 time (naive means UTC), else ``None``.

    Every date-time RFC 3339 allows parses: a leap second (``:60``) counts as ``:59``,
    fractions beyond microseconds are cut, and times beyond ``datetime``'s range are
    clamped to it."""
    if text.isdigit() and len(text) <= 19:
        seconds = float(int(text))
        while seconds > 1e11:  # ms, µs or ns since the epoch
            seconds /= 1000
        return datetime.fromtimestamp(seconds, UTC)
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, sec, frac, _z, sign, oh, om = m.groups()
    try:
        naive = datetime(
            max(int(year), 1),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            min(int(sec or 0), 59),
            int((frac or "0")[:6].ljust(6, "0")),
        )
    except ValueError:
        return None
    offset = timedelta(0)
    if sign:
        offset = timedelta(hours=int(oh), minutes=int(om)) * (1 if sign == "+" else -1)
        if offset >= timedelta(hours=24):
            return None
    try:
        return (naive - offset).replace(tzinfo=UTC)
    except OverflowError:
        return (
            datetime.min.replace(tzinfo=UTC)
            if offset > timedelta(0)
            else datetime.max.replace(tzinfo=UTC)
        )


#: Integers in this range are epoch milliseconds (1973 to 5138), the common case.
EPOCH_MS_LOW, EPOCH_MS_HIGH = 100_000_000_000, 100_000_000_000_000


def epoch_to_datetime(value: Any, field: str) -> datetime | None:
    """Exchange timestamps: epoch seconds, milliseconds, microseconds or nanoseconds (by
    magnitude), as a number or a digit string; or an ISO 8601 string."""
    if type(value) is int and EPOCH_MS_LOW < value < EPOCH_MS_HIGH:
        return datetime.fromtimestamp(value / 1000, UTC)  # the common case: epoch ms
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadMessage("bad_value", f"{field} is a boolean")
    if isinstance(value, str):
        if value.isdigit():
            value = int(value)
        else:
            parsed = parse_time(value)
            if parsed is not None:
                return parsed
            try:
                value = float(value)
            except ValueError:
                raise BadMessage("bad_value", f"{field} is not a time") from None
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
        source_id=None if key is None else str(key),
        session_id=ctx.session_id,
        bid_price=decimal_text(bid_price, "bid_price"),
        bid_size=decimal_text(bid_size, "bid_size"),
        ask_price=decimal_text(ask_price, "ask_price"),
        ask_size=decimal_text(ask_size, "ask_size"),
    )


def _side(value: Any) -> str | None:
    side = text_field(value, "side")
    return side.lower() if side else side
