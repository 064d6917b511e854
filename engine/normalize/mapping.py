"""Per-connector field mapping for custom JSON feeds: dotted paths to the record fields, so
a feed gets proper columns without code.

A mapping is a JSON object such as::

    {"records": "payload.trades", "instrument": "$.symbol", "price": "px",
     "size": "qty", "side": "side", "timestamp": "ts", "id": "tradeId"}

``records`` locates the record(s) in the message (a list gives one record per item; absent
means the whole message is one record). Other paths are relative to each record; a path
starting with ``$.`` is relative to the whole message. Segments that are whole numbers index
lists (``data.0.px``). A path that does not resolve leaves the column empty.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs
import orjson

from ..errors import BadMessage
from ..models import Record
from .common import Context, Control, Normalizer, make_record

FIELDS = (
    "records",
    "instrument",
    "price",
    "size",
    "side",
    "timestamp",
    "id",
    "type",
    "bid_price",
    "bid_size",
    "ask_price",
    "ask_size",
)
_MISSING = object()


def _split(path: str) -> tuple[bool, tuple[str, ...]]:
    absolute = path.startswith("$.")
    segments = tuple((path[2:] if absolute else path).split("."))
    if not path or any(not s for s in segments):
        raise ValueError(f"invalid path {path!r}")
    return absolute, segments


@attrs.frozen
class FieldMapping:
    paths: dict[str, tuple[bool, tuple[str, ...]]]

    @classmethod
    def from_dict(cls, mapping: dict[str, str]) -> FieldMapping:
        """Check and compile a mapping; ``ValueError`` names the bad key or path."""
        unknown = set(mapping) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown mapping field {sorted(unknown)[0]!r}; use {FIELDS}")
        paths = {}
        for key, path in mapping.items():
            if not isinstance(path, str) or len(path) > 200:
                raise ValueError(f"path for {key!r} must be a string of at most 200 characters")
            paths[key] = _split(path)
        return cls(paths)

    def get(self, key: str, item: Any, message: Any) -> Any:
        spec = self.paths.get(key)
        if spec is None:
            return None
        absolute, segments = spec
        value = resolve(message if absolute else item, segments)
        return None if value is _MISSING else value


def resolve(value: Any, segments: tuple[str, ...]) -> Any:
    for segment in segments:
        if isinstance(value, dict):
            value = value.get(segment, _MISSING)
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def mapped_normalizer(mapping: FieldMapping) -> Normalizer:
    """A normalizer (see :mod:`engine.normalize`) that applies ``mapping``."""

    def normalize(
        msg: Any, raw: bytes, ctx: Context, received_at: datetime
    ) -> list[Record] | Control:
        if msg == "pong":
            return Control("pong")
        records_spec = mapping.paths.get("records")
        found = msg if records_spec is None else resolve(msg, records_spec[1])
        if found is _MISSING:
            raise BadMessage("unmapped", "the mapped 'records' path is not in the message")
        items = found if isinstance(found, list) else [found]
        out = []
        for item in items:
            if not isinstance(item, dict):
                raise BadMessage("bad_shape", "a mapped record is not an object")
            payload = raw if item is msg else orjson.dumps(item)
            kind = mapping.get("type", item, msg)
            out.append(
                make_record(
                    ctx,
                    received_at,
                    payload,
                    message_type=kind if isinstance(kind, str) and kind else "message",
                    instrument=mapping.get("instrument", item, msg),
                    price=mapping.get("price", item, msg),
                    size=mapping.get("size", item, msg),
                    side=mapping.get("side", item, msg),
                    timestamp=mapping.get("timestamp", item, msg),
                    key=mapping.get("id", item, msg),
                    bid_price=mapping.get("bid_price", item, msg),
                    bid_size=mapping.get("bid_size", item, msg),
                    ask_price=mapping.get("ask_price", item, msg),
                    ask_size=mapping.get("ask_size", item, msg),
                )
            )
        return out

    return normalize
