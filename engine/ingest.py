"""Turn one message handed to the API (save, preview) into records. Pure functions.

The message goes through the same normalizer a connector of that exchange would use; the
caller may then override columns explicitly, and may give an idempotency key so a retried
save is not stored twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs
import orjson

from .errors import BadMessage
from .models import Record, evolve_record
from .normalize import Context, Control, Normalizer, normalizer_for
from .normalize.common import decimal_text, epoch_to_datetime, make_record, text_field


@attrs.frozen
class Overrides:
    """Columns given explicitly with a saved message; ``None`` keeps the normalizer's."""

    instrument: str | None = None
    price: Any = None
    size: Any = None
    side: str | None = None
    message_type: str | None = None
    timestamp: Any = None


def records_from_message(
    message: Any,
    *,
    exchange: str,
    connector_id: str | None,
    received_at: datetime,
    overrides: Overrides = Overrides(),
    idempotency_key: str | None = None,
    batch_id: int | None = None,
    normalizer: Normalizer | None = None,
    message_number: int | None = None,
    format: str | None = None,
) -> list[Record]:
    """Normalize ``message``; raise :class:`BadMessage` if it cannot be stored (including a
    control message such as a subscription ack, which holds no data, and a message that
    holds no records). ``exchange="raw"`` stores the message whole as one record.

    A bad override names its field in :attr:`BadMessage.field`."""
    if b"\\u0000" in (raw := orjson.dumps(message)):
        raise BadMessage("nul_character", "PostgreSQL cannot store \\u0000 in JSON")
    ctx = Context(connector_id, exchange)
    if exchange == "raw" and normalizer is None:
        result: list[Record] | Control = [
            make_record(ctx, received_at, raw, message_type="message")
        ]
    else:
        normalize = normalizer or normalizer_for(exchange)
        result = normalize(message, raw, ctx, received_at)
    if isinstance(result, Control):
        raise BadMessage("control", f"a {result.kind} message holds no data to store")
    if not result:
        raise BadMessage("empty", "the message holds no records")
    try:
        changes = _overrides(overrides)
    except BadMessage as exc:
        field = exc.detail.split(" ", 1)[0]
        raise BadMessage(exc.category, exc.detail, field=field) from None
    if batch_id is not None:
        changes["batch_id"] = batch_id
    if message_number is not None:
        changes["message_number"] = message_number
    if format is not None:
        changes["format"] = format
    records = []
    for i, record in enumerate(result):
        extra = dict(changes)
        if idempotency_key is not None:
            extra["dedup_key"] = f"k:{idempotency_key}:{i}"
        records.append(evolve_record(record, **extra) if extra else record)
    return records


def _overrides(overrides: Overrides) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if overrides.instrument is not None:
        changes["instrument"] = text_field(overrides.instrument, "instrument")
    if overrides.price is not None:
        changes["price"] = decimal_text(overrides.price, "price")
    if overrides.size is not None:
        changes["size"] = decimal_text(overrides.size, "size")
    if overrides.side is not None:
        changes["side"] = text_field(overrides.side, "side")
    if overrides.message_type is not None:
        changes["message_type"] = overrides.message_type
    if overrides.timestamp is not None:
        # An empty time ("") keeps the record's own, like an absent one: a record always
        # has a time (it is the key of its partition).
        when = epoch_to_datetime(overrides.timestamp, "timestamp")
        if when is not None:
            changes["timestamp"] = when
    return changes
