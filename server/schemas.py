"""Request bodies and query parameters as attrs classes, and the JSON shapes of responses.

Wire field names are decided here and only here.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import orjson

from engine.auth import (
    AUTH_TYPES,
    HMAC_PRESETS,
    OKX_EXTRA_SECRETS,
    REQUIRED_SECRETS,
    SECRET_FIELDS,
    SIGN_PARTS,
    is_credential_name,
)
from engine.crypto import Keyring, SecretError
from engine.hub import record_event
from engine.models import ConnectorSpec, ConnectorStatus, Record, StoredRecord
from engine.normalize import NORMALIZERS
from engine.normalize.common import TIME_SCHEMA
from engine.normalize.mapping import FIELDS as MAPPING_FIELDS
from engine.storage.queries import BATCH_SORTABLE, MESSAGE_SORTABLE, SORTABLE

from .contract import field, wire_name

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_SUBSCRIBE_MESSAGES = 100
MAX_BATCH_MESSAGES = 10_000
MASK = "****"

#: Whitespace as Python's str.isspace() and ECMA-262's \s together, spelled out so that
#: every regex engine reading a pattern (ours, the client's, Schemathesis') agrees.
SPACE = "".join(
    [
        "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680",
        *map(chr, range(0x2000, 0x200B)),
        "\u2028\u2029\u202f\u205f\u3000\ufeff",
    ]
)
_PORT = r"(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
_H = "[0-9a-fA-F]{1,4}"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_V6 = "|".join(
    [
        f"(?:{_H}:){{7}}{_H}",
        f"(?:{_H}:){{1,7}}:",
        f"(?:{_H}:){{1,6}}:{_H}",
        *(f"(?:{_H}:){{1,{n}}}(?::{_H}){{1,{7 - n}}}" for n in range(1, 6)),
        f":(?:(?::{_H}){{1,7}}|:)",
        f"(?:{_H}:){{6}}{_V4}",
        f"::(?:[fF]{{4}}(?::0{{1,4}})?:)?{_V4}",
        f"(?:{_H}:){{1,4}}:{_V4}",
    ]
)
#: What ``api_url`` accepts: a WebSocket or HTTP URL whose host is an RFC 3986 name (ASCII;
#: use punycode for IDNs) or a bracketed IPv6 address, an optional port in range, then any
#: path/query without whitespace. Every URL it matches splits cleanly (urllib).
URL_PATTERN = (
    r"^(?:[wW][sS][sS]?|[hH][tT][tT][pP][sS]?)://"
    r"(?:[A-Za-z0-9\-._~%!$&'()*+,;=]+|\[(?:"
    + _V6
    + r")\])"
    + _PORT
    + "(?:[/?#][^"
    + SPACE
    + r"\x00]*)?$"
)
NAME_TOKEN = r"^[A-Za-z0-9_]{1,50}$"
HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$"
NO_CONTROL = r"^[^\r\n\x00]*$"
#: A field mapping's path: dot-separated non-empty segments, ``$.`` for the whole message.
MAPPING_PATH = r"^(?:\$\.)?[^.\x00]+(?:\.[^.\x00]+)*$"
DECIMAL = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)$"
# Case-insensitive names of the normalizers (JSON Schema patterns have no (?i)).
FORMATS = (*NORMALIZERS, "custom", "generic", "json", "raw")
FORMAT_PATTERN = (
    "^(?:" + "|".join("".join(f"[{c.lower()}{c.upper()}]" for c in name) for name in FORMATS) + ")$"
)


def _text(limit: int, **extra: Any) -> Any:
    return field(default=None, minLength=1, maxLength=limit, **extra)


def _secret(limit: int = 4096) -> Any:
    return field(default=None, minLength=1, maxLength=limit, writeOnly=True, repr=False)


def _names(what: str) -> Any:
    return field(
        factory=list,
        maxItems=50,
        items={"minLength": 1, "maxLength": 200},
        description=f"{what} names whose values are credentials: masked in responses "
        "(names that look like credentials are masked anyway)",
    )


@attrs.frozen
class AuthOptions:
    """Non-secret settings of ``auth_type`` (see the README's authentication table)."""

    header: str | None = _text(100, description="API_KEY: header name (X-API-Key)")
    param: str | None = _text(100, description="API_KEY in query: parameter name (api_key)")
    preset: str | None = field(default=None, enum=[*HMAC_PRESETS, None])
    sign: list[str] | None = field(
        default=None, items={"enum": list(SIGN_PARTS)}, description="HMAC generic: parts signed"
    )
    signature_header: str | None = _text(100)
    signature_param: str | None = _text(100)
    encoding: str | None = field(default=None, enum=["hex", "base64", None])
    key_header: str | None = _text(100)
    timestamp_header: str | None = _text(100)
    # "in" is a Python keyword: the attribute is in_, the wire name "in".
    in_: str | None = field(default=None, name="in", enum=["header", "query", None])


def _auth_conditions() -> list[dict[str, Any]]:
    """REST connectors need the credentials their ``auth_type`` uses
    (``engine.auth.REQUIRED_SECRETS``), said in the schema as ``if``/``then``."""
    rest = {"type": "string", "pattern": "^[hH][tT][tT][pP]"}
    out = []
    for auth, names in REQUIRED_SECRETS.items():
        cond = {"properties": {"auth_type": {"const": auth}, "api_url": rest}}
        out.append(
            {
                "if": {**cond, "required": ["auth_type", "api_url"]},
                "then": {
                    "required": list(names),
                    "properties": {n: {"type": "string"} for n in names},
                },
            }
        )
    okx = {
        "properties": {
            "auth_type": {"const": "HMAC"},
            "api_url": rest,
            "auth_options": {"properties": {"preset": {"const": "okx"}}, "required": ["preset"]},
        },
        "required": ["auth_type", "api_url", "auth_options"],
    }
    extra = list(OKX_EXTRA_SECRETS)
    then = {"required": extra, "properties": {n: {"type": "string"} for n in extra}}
    out.append({"if": okx, "then": then})
    return out


@attrs.frozen
class ConnectorCreate:
    """Body of ``POST /api/connectors``."""

    __schema_extra__: ClassVar[dict[str, Any]] = {"allOf": _auth_conditions()}

    name: str = field(
        minLength=1,
        maxLength=200,
        pattern="^[^\\x00]*[^" + SPACE + "\\x00][^\\x00]*$",
        error_text="must not be blank",
    )
    api_url: str = field(
        maxLength=2048,
        pattern=URL_PATTERN,
        description="ws:// or wss:// for a streaming source, http:// or https:// for a polled one",
        error_text="must be a ws://, wss://, http:// or https:// URL with a host",
    )
    http_method: str = field(default="GET", enum=list(HTTP_METHODS))
    headers: dict[str, str] = field(
        factory=dict,
        maxProperties=50,
        propertyNames={"pattern": HEADER_NAME},
        additionalProperties={"maxLength": 8192, "pattern": NO_CONTROL},
    )
    query_params: dict[str, str] = field(
        factory=dict,
        maxProperties=50,
        propertyNames={"minLength": 1, "maxLength": 200},
        additionalProperties={"maxLength": 8192},
    )
    secret_headers: list[str] = _names("Header")
    secret_query_params: list[str] = _names("Query parameter")
    auth_type: str = field(default="None", enum=list(AUTH_TYPES))
    polling_interval: int = field(
        default=1000, minimum=100, maximum=86_400_000, description="REST: milliseconds"
    )
    subscribe_messages: list[Any] = field(
        factory=list,
        maxItems=MAX_SUBSCRIBE_MESSAGES,
        description="sent after every connect: strings as written, anything else as JSON",
    )
    exchange: str | None = field(
        default=None, pattern=NAME_TOKEN, description="picks the normalizer; default from host"
    )
    ping_interval: float = field(
        default=20.0, minimum=0, maximum=3600, description="seconds; 0 disables"
    )
    pong_timeout: float = field(default=10.0, minimum=1, maximum=600)
    stale_timeout: float = field(
        default=0.0, minimum=0, maximum=86_400, description="seconds; 0 never"
    )
    app_ping: str | None = _text(1000)
    app_ping_interval: float = field(default=25.0, minimum=1, maximum=3600)
    field_mapping: dict[str, str] | None = field(
        default=None,
        propertyNames={"enum": list(MAPPING_FIELDS)},
        additionalProperties={"maxLength": 200, "pattern": MAPPING_PATH},
    )
    retention_days: int | None = field(default=None, minimum=1, maximum=100_000)
    auth_options: AuthOptions = attrs.field(factory=AuthOptions)
    request_body: Any = field(default=None, description="REST: JSON sent with every request")
    api_key: str | None = _secret()
    api_secret: str | None = _secret()
    passphrase: str | None = _secret()
    bearer_token: str | None = _secret(8192)
    username: str | None = _secret()
    password: str | None = _secret()


def auth_options_dict(options: AuthOptions) -> dict[str, Any]:
    """The options that are set, under their wire names, as a connector stores them."""
    return {
        wire_name(a): getattr(options, a.name)
        for a in attrs.fields(AuthOptions)
        if getattr(options, a.name) is not None
    }


_MAX_BIGINT = 2**63 - 1


@attrs.frozen
class SaveMessage:
    """Body of ``POST /api/websocket/save`` (and each item of ``save-batch``): a raw
    message and how to read it. ``exchange`` (else ``format``, case-insensitive; else the
    message's shape) picks the normalizer; the other fields override what it found."""

    data: Any = field(
        type=["object", "array"],
        minItems=1,
        description="the raw message (an array: one record per item)",
    )
    exchange: str | None = field(default=None, pattern=NAME_TOKEN)
    connector_id: str | None = _text(100)
    instrument: str | None = _text(200)
    price: Any = field(
        default=None, type=["string", "number", "null"], pattern=DECIMAL, maxLength=128
    )
    size: Any = field(
        default=None, type=["string", "number", "null"], pattern=DECIMAL, maxLength=128
    )
    side: str | None = _text(20)
    message_type: str | None = _text(64)
    timestamp: Any = field(
        default=None,
        type=["string", "number", "null"],
        minimum=0,
        parsed_by={"anyOf": [*TIME_SCHEMA["anyOf"], {"type": "number"}, {"type": "null"}]},
        description="source time: RFC 3339 / ISO 8601, or epoch s/ms/µs/ns",
    )
    idempotency_key: str | None = _text(200)
    # The original service's fields: the message type, its sequence number, its format.
    type: str | None = _text(64, description="the message type (message_type wins if both)")
    messageNumber: int | None = field(default=None, minimum=-_MAX_BIGINT, maximum=_MAX_BIGINT)
    format: str | None = field(
        default=None,
        pattern=FORMAT_PATTERN,
        description="the normalizer when exchange is absent or custom (OKX, Binance, …)",
        error_text=f"must name a normalizer: one of {', '.join(FORMATS)}",
    )


@attrs.frozen
class Preview:
    """Body of ``POST /api/normalize/preview``: a raw message (JSON, or a string holding
    the frame's text) and whose normalizer to use."""

    message: Any = field(description="the message, or a string with the frame's text")
    connector_id: str | None = _text(100)
    exchange: str | None = field(default=None, pattern=NAME_TOKEN)
    field_mapping: dict[str, str] | None = field(
        default=None,
        propertyNames={"enum": list(MAPPING_FIELDS)},
        additionalProperties={"maxLength": 200, "pattern": MAPPING_PATH},
    )


def preview_json(r: Record) -> dict[str, Any]:
    """A record as a preview shows it: the realtime columns, its idempotency key, no id."""
    event = record_event(StoredRecord(id=0, record=r))
    del event["type"], event["id"]
    return {**event, "dedup_key": r.dedup_key}


@attrs.frozen
class SaveBatch:
    """Body of ``POST /api/websocket/save-batch``."""

    messages: list[SaveMessage] = field(minItems=1, maxItems=MAX_BATCH_MESSAGES)
    metrics: dict[str, Any] = field(factory=dict)
    connector_id: str | None = _text(100)
    exchange: str | None = field(default=None, pattern=NAME_TOKEN)


@attrs.frozen
class RealtimeTest:
    """Body of ``POST /api/realtime/test`` (optional)."""

    message: Any = field(default="test message", description="sent as the notice's message")


# --- query strings ---------------------------------------------------------------------

NUMBERS = field(
    default="number",
    enum=["number", "string"],
    description="prices and sizes as JSON numbers with the source's digits (default) "
    "or as JSON strings",
)


@attrs.frozen
class ConnectorDataQuery:
    """``GET /api/connectors/{id}/data``."""

    limit: int = field(default=100, minimum=1, maximum=10_000)
    skip: int = field(default=0, minimum=0, maximum=10_000_000)
    sort_by: str = field(default="timestamp", enum=sorted(SORTABLE))
    sort_order: int = field(default=-1, enum=[-1, 1], description="-1 newest first, 1 oldest")
    numbers: str = NUMBERS


@attrs.frozen
class ListingQuery:
    """``GET /api/connectors/{id}/gaps|errors|rejected``."""

    limit: int = field(default=100, minimum=1, maximum=10_000)


@attrs.frozen
class DeleteQuery:
    """``DELETE /api/connectors/{id}``."""

    purge_data: bool = field(default=False, description="also delete its records")


@attrs.frozen
class DataFilterQuery:
    """``GET /api/websocket/data/count``; the filters of ``/api/websocket/data``."""

    exchange: str | None = _text(50)
    instrument: str | None = _text(200)
    connector_id: str | None = _text(100)
    from_: str | None = field(
        default=None,
        name="from",
        parsed_by=TIME_SCHEMA,
        description="source time ≥ this: RFC 3339 / ISO 8601, or epoch s/ms/µs/ns digits",
    )
    to: str | None = field(
        default=None, parsed_by=TIME_SCHEMA, description="source time < this (same forms)"
    )
    collection_type: str = field(default="messages", enum=["messages", "batches"])


@attrs.frozen
class DataQuery(DataFilterQuery):
    """``GET /api/websocket/data``."""

    after_id: int | None = field(
        default=None,
        minimum=0,
        maximum=_MAX_BIGINT,
        description="only ids below (sort_order -1) or above (1) this; with sort_by=id this "
        "is keyset pagination: pass the previous page's next_after_id",
    )
    limit: int = field(default=100, minimum=1, maximum=100_000)
    skip: int = field(default=0, minimum=0, maximum=10_000_000)
    sort_by: str | None = field(
        default=None,
        enum=[*sorted(MESSAGE_SORTABLE | BATCH_SORTABLE), None],
        description="default timestamp (batches: received_at); batches have no price, size "
        "or instrument and are ordered by id for those",
    )
    sort_order: int = field(default=-1, enum=[-1, 1])
    numbers: str = NUMBERS


@attrs.frozen
class RealtimeQuery:
    """``WS /api/realtime``: the initial subscription."""

    connector_id: str | None = _text(200)
    exchange: str | None = _text(200)
    instrument: str | None = _text(200)
    types: str | None = field(
        default=None, maxLength=2000, description="comma-separated message types"
    )
    batch: bool = field(default=False, description="data_batch frames")
    numbers: str = NUMBERS
    after_id: int | None = field(
        default=None,
        minimum=0,
        maximum=_MAX_BIGINT,
        description="resume: first every matching record committed after this id, then live",
    )
    token: str | None = field(default=None, description="the API token, if one is required")


def connector_json(spec: ConnectorSpec, status: str, keyring: Keyring) -> dict[str, Any]:
    """A connector as the API shows it. Secrets are write-only (``****`` when set); header
    and query values are shown as given unless they are credentials: a name that looks
    like one (``engine.auth.is_credential_name``) or one the user listed as secret. Every
    value is encrypted at rest either way."""
    secrets = {name: (MASK if name in spec.credentials else None) for name in SECRET_FIELDS}
    return {
        **secrets,
        "connector_id": spec.connector_id,
        "name": spec.name,
        "api_url": spec.api_url,
        "protocol": spec.protocol,
        "exchange": spec.exchange,
        "http_method": spec.http_method,
        "headers": _readable(spec, "headers", "header", keyring),
        "query_params": _readable(spec, "query_params", "query", keyring),
        "secret_headers": spec.secret_names.get("headers", []),
        "secret_query_params": spec.secret_names.get("query_params", []),
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


def _readable(spec: ConnectorSpec, key: str, prefix: str, keyring: Keyring) -> dict[str, str]:
    sealed: dict[str, str] = getattr(spec, key)
    marked = {n.lower() for n in spec.secret_names.get(key, [])}
    out = {}
    for name, ciphertext in sealed.items():
        if is_credential_name(name) or name.lower() in marked:
            out[name] = MASK
            continue
        try:
            out[name] = keyring.decrypt(ciphertext, spec.connector_id, f"{prefix}:{name}")
        except SecretError:
            out[name] = MASK  # cannot be read with the keys we have: say nothing of it
    return out


def status_json(status: ConnectorStatus) -> dict[str, Any]:
    return attrs.asdict(status)


_NUMBER_COLUMNS = ("price", "size", "bid_price", "bid_size", "ask_price", "ask_size")
_OPTIONAL_COLUMNS = (
    "status_code",
    "response_time_ms",
    "batch_id",
    "message_number",
    "format",
)


# A saved message's fields, under the names the client sent them with.
_WIRE = {"message_number": "messageNumber"}


def record_json(row: dict[str, Any], *, strings: bool = False) -> dict[str, Any]:
    """A stored record row (``data`` selected as JSON text) as the API shows it: the shape
    of a realtime ``data_update`` without ``type``, numbers as JSON numbers with their
    stored digits (or as strings with ``strings``)."""
    out = {
        "id": row["id"],
        "source_id": row["source_id"],
        "session_id": row["session_id"],
        "connector_id": row["connector_id"],
        "timestamp": row["timestamp"],
        "received_at": row["received_at"],
        "exchange": row["exchange"],
        "instrument": row["instrument"],
        "side": row["side"],
        "message_type": row["message_type"],
    }
    for key in _NUMBER_COLUMNS:
        value = row[key]
        if value is not None:
            value = str(value) if strings else orjson.Fragment(str(value))
        out[key] = value
    for key in _OPTIONAL_COLUMNS:
        if key in row:
            out[_WIRE.get(key, key)] = row[key]
    out["data"] = orjson.Fragment(row["data"])
    return out


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
