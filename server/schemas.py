"""Request bodies and query parameters as attrs classes, and the JSON shapes of responses.

Wire field names are decided here and only here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import attrs
import orjson

from engine.auth import SECRET_FIELDS
from engine.hub import record_event
from engine.models import ConnectorSpec, ConnectorStatus, Record, StoredRecord
from engine.normalize import FieldMapping
from engine.sources import protocol_for

from .validation import check

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
AUTH_TYPES = ("None", "API_KEY", "BEARER", "BASIC", "HMAC")
MAX_SUBSCRIBE_MESSAGES = 100
MAX_SUBSCRIBE_BYTES = 64 * 1024
MASK = "****"


def _valid_url(url: str) -> bool:
    if len(url) > 2048 or any(c.isspace() for c in url):
        return False
    parts = urlsplit(url)
    return protocol_for(url) is not None and bool(parts.hostname)


def _optional_text(limit: int) -> Any:
    return check(lambda v: v is None or 0 < len(v) <= limit, f"must be 1 to {limit} characters")


def _valid_mapping(value: dict[str, str] | None) -> bool:
    if value is None:
        return True
    try:
        FieldMapping.from_dict(value)
    except ValueError:
        return False
    return True


def _small_json_list(value: list[Any]) -> bool:
    return len(value) <= MAX_SUBSCRIBE_MESSAGES and all(
        len(orjson.dumps(v)) <= MAX_SUBSCRIBE_BYTES for v in value
    )


@attrs.frozen
class ConnectorCreate:
    """Body of ``POST /api/connectors``."""

    name: str = attrs.field(
        validator=check(lambda v: 0 < len(v.strip()) <= 200, "must be 1 to 200 characters")
    )
    api_url: str = attrs.field(
        validator=check(_valid_url, "must be a ws://, wss://, http:// or https:// URL with a host")
    )
    http_method: str = attrs.field(
        default="GET",
        validator=check(lambda v: v in HTTP_METHODS, f"must be one of {HTTP_METHODS}"),
    )
    headers: dict[str, str] = attrs.field(
        factory=dict, validator=check(lambda v: len(v) <= 50, "at most 50 headers")
    )
    query_params: dict[str, str] = attrs.field(
        factory=dict, validator=check(lambda v: len(v) <= 50, "at most 50 query parameters")
    )
    auth_type: str = attrs.field(
        default="None", validator=check(lambda v: v in AUTH_TYPES, f"must be one of {AUTH_TYPES}")
    )
    polling_interval: int = attrs.field(
        default=1000,
        validator=check(lambda v: 100 <= v <= 86_400_000, "must be 100 to 86400000 milliseconds"),
    )
    subscribe_messages: list[Any] = attrs.field(
        factory=list,
        validator=check(
            _small_json_list,
            f"at most {MAX_SUBSCRIBE_MESSAGES} messages of at most {MAX_SUBSCRIBE_BYTES} bytes",
        ),
    )
    exchange: str | None = attrs.field(
        default=None,
        validator=check(
            lambda v: v is None or (0 < len(v) <= 50 and v.replace("_", "").isalnum()),
            "must be 1 to 50 letters, digits or underscores",
        ),
    )
    ping_interval: float = attrs.field(
        default=20.0, validator=check(lambda v: v == 0 or 1 <= v <= 3600, "0 or 1 to 3600 s")
    )
    pong_timeout: float = attrs.field(
        default=10.0, validator=check(lambda v: 1 <= v <= 600, "must be 1 to 600 s")
    )
    stale_timeout: float = attrs.field(
        default=0.0, validator=check(lambda v: v == 0 or 1 <= v <= 86_400, "0 or 1 to 86400 s")
    )
    app_ping: str | None = attrs.field(default=None, validator=_optional_text(1000))
    app_ping_interval: float = attrs.field(
        default=25.0, validator=check(lambda v: 1 <= v <= 3600, "must be 1 to 3600 s")
    )
    field_mapping: dict[str, str] | None = attrs.field(
        default=None, validator=check(_valid_mapping, "must map known fields to dotted paths")
    )
    retention_days: int | None = attrs.field(
        default=None,
        validator=check(lambda v: v is None or 1 <= v <= 100_000, "must be 1 to 100000 days"),
    )
    auth_options: dict[str, Any] = attrs.field(factory=dict)
    request_body: Any = None
    api_key: str | None = attrs.field(default=None, validator=_optional_text(4096), repr=False)
    api_secret: str | None = attrs.field(default=None, validator=_optional_text(4096), repr=False)
    passphrase: str | None = attrs.field(default=None, validator=_optional_text(4096), repr=False)
    bearer_token: str | None = attrs.field(default=None, validator=_optional_text(8192), repr=False)
    username: str | None = attrs.field(default=None, validator=_optional_text(4096), repr=False)
    password: str | None = attrs.field(default=None, validator=_optional_text(4096), repr=False)


def _json_container(value: Any) -> bool:
    return isinstance(value, dict | list)


@attrs.frozen
class SaveMessage:
    """Body of ``POST /api/websocket/save`` (and each item of ``save-batch``).

    ``data`` is the raw message, normalized by ``exchange``'s normalizer (``custom``: the
    generic one). The other fields override what the normalizer found.
    """

    data: Any = attrs.field(validator=check(_json_container, "must be a JSON object or array"))
    exchange: str = attrs.field(
        default="custom",
        validator=check(
            lambda v: 0 < len(v) <= 50 and v.replace("_", "").isalnum(),
            "must be 1 to 50 letters, digits or underscores",
        ),
    )
    connector_id: str | None = attrs.field(default=None, validator=_optional_text(100))
    instrument: str | None = attrs.field(default=None, validator=_optional_text(200))
    price: Any = None
    size: Any = None
    side: str | None = attrs.field(default=None, validator=_optional_text(20))
    message_type: str | None = attrs.field(default=None, validator=_optional_text(64))
    timestamp: Any = None
    idempotency_key: str | None = attrs.field(default=None, validator=_optional_text(200))


@attrs.frozen
class Preview:
    """Body of ``POST /api/normalize/preview``: a raw message (JSON, or a string holding
    the frame's text) and whose normalizer to use."""

    message: Any
    connector_id: str | None = attrs.field(default=None, validator=_optional_text(100))
    exchange: str | None = attrs.field(default=None, validator=_optional_text(50))
    field_mapping: dict[str, str] | None = attrs.field(
        default=None, validator=check(_valid_mapping, "must map known fields to dotted paths")
    )


def preview_json(r: Record) -> dict[str, Any]:
    """A record as a preview shows it: the realtime columns, its idempotency key, no id."""
    event = record_event(StoredRecord(id=0, record=r))
    del event["type"], event["id"]
    return {**event, "dedup_key": r.dedup_key}


MAX_BATCH_MESSAGES = 10_000


@attrs.frozen
class SaveBatch:
    """Body of ``POST /api/websocket/save-batch``."""

    messages: list[SaveMessage] = attrs.field(
        validator=check(
            lambda v: 0 < len(v) <= MAX_BATCH_MESSAGES,
            f"must hold 1 to {MAX_BATCH_MESSAGES} messages",
        )
    )
    metrics: dict[str, Any] = attrs.field(factory=dict)
    connector_id: str | None = attrs.field(default=None, validator=_optional_text(100))
    exchange: str = attrs.field(
        default="custom",
        validator=check(
            lambda v: 0 < len(v) <= 50 and v.replace("_", "").isalnum(),
            "must be 1 to 50 letters, digits or underscores",
        ),
    )


@attrs.frozen
class DataQuery:
    """Query parameters of ``GET /api/connectors/{id}/data``."""

    limit: int = 100
    skip: int = 0
    sort_by: str = "timestamp"
    sort_order: int = -1


def connector_json(spec: ConnectorSpec, status: str) -> dict[str, Any]:
    """A connector as the API shows it: secrets are write-only, shown as ``****`` when set."""
    secrets = {name: (MASK if name in spec.credentials else None) for name in SECRET_FIELDS}
    return {
        **secrets,
        "connector_id": spec.connector_id,
        "name": spec.name,
        "api_url": spec.api_url,
        "protocol": spec.protocol,
        "exchange": spec.exchange,
        "http_method": spec.http_method,
        "headers": {k: MASK for k in spec.headers},
        "query_params": {k: MASK for k in spec.query_params},
        "auth_type": spec.auth_type,
        "polling_interval": spec.polling_interval,
        "subscribe_messages": spec.subscribe_messages,
        "ping_interval": spec.ping_interval,
        "pong_timeout": spec.pong_timeout,
        "stale_timeout": spec.stale_timeout,
        "app_ping": spec.app_ping,
        "app_ping_interval": spec.app_ping_interval,
        "field_mapping": spec.field_mapping,
        "retention_days": spec.retention_days,
        "auth_options": spec.auth_options,
        "request_body": spec.request_body,
        "status": status,
        "created_at": spec.created_at,
        "updated_at": spec.updated_at,
    }


def status_json(status: ConnectorStatus) -> dict[str, Any]:
    return attrs.asdict(status)


def record_json(row: dict[str, Any]) -> dict[str, Any]:
    """A stored record row (``data`` selected as JSON text) as the API shows it."""
    price, size = row["price"], row["size"]
    return {
        "id": row["id"],
        "connector_id": row["connector_id"],
        "timestamp": row["timestamp"],
        "received_at": row["received_at"],
        "exchange": row["exchange"],
        "instrument": row["instrument"],
        "price": None if price is None else str(price),
        "size": None if size is None else str(size),
        "side": row["side"],
        "message_type": row["message_type"],
        **{
            key: None if row[key] is None else str(row[key])
            for key in ("bid_price", "bid_size", "ask_price", "ask_size")
            if key in row
        },
        **({"batch_id": row["batch_id"]} if "batch_id" in row else {}),
        "data": orjson.Fragment(row["data"]),
    }


def batch_json(row: dict[str, Any]) -> dict[str, Any]:
    """A ``websocket_batches`` row (``metrics`` selected as JSON text)."""
    return {
        "id": row["id"],
        "connector_id": row["connector_id"],
        "exchange": row["exchange"],
        "message_count": row["message_count"],
        "metrics": orjson.Fragment(row["metrics"]),
        "received_at": row["received_at"],
    }
