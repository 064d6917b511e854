"""The values that travel between actors and into storage. All frozen: attrs classes, and
:class:`Record` a msgspec ``Struct`` (built in C: 0.14 µs instead of attrs' 1.1 µs, the
largest single cost of normalizing a trade, measured in ``bench``).

Field names on the wire are decided in ``server.schemas``; these classes have no
serialization methods.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import attrs
import msgspec

Protocol = Literal["websocket", "rest"]


@attrs.frozen
class ConnectorSpec:
    """A connector's configuration as stored in ``api_connectors``."""

    connector_id: str
    name: str
    api_url: str
    protocol: Protocol
    exchange: str
    http_method: str = "GET"
    headers: dict[str, str] = attrs.field(factory=dict)
    query_params: dict[str, str] = attrs.field(factory=dict)
    auth_type: str = "None"
    polling_interval: int = 1000
    subscribe_messages: list[Any] = attrs.field(factory=list)
    desired_state: Literal["running", "stopped"] = "stopped"
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: Seconds between protocol pings; 0 disables them.
    ping_interval: float = 20.0
    #: Seconds to wait for the pong before the connection counts as dead.
    pong_timeout: float = 10.0
    #: Reconnect when no message arrived for this many seconds; 0 (default) never does,
    #: so quiet channels do not cause false reconnects.
    stale_timeout: float = 0.0
    #: Application-level ping text some exchanges need (OKX: ``ping``), or ``None``.
    app_ping: str | None = None
    app_ping_interval: float = 25.0
    #: For custom JSON feeds: dotted paths to the record fields (see ``normalize.mapping``).
    field_mapping: dict[str, str] | None = None
    #: Delete this connector's records older than this many days; ``None`` keeps them.
    retention_days: int | None = None
    #: Secret fields (api_key, api_secret, ...) as ciphertexts (see ``engine.crypto``).
    credentials: dict[str, str] = attrs.field(factory=dict)
    #: Non-secret authentication settings (header names, HMAC preset, ...).
    auth_options: dict[str, Any] = attrs.field(factory=dict)
    #: REST: a JSON body sent with every request (POST/PUT/PATCH).
    request_body: Any = None
    #: Header and query names the user marked as credentials, masked in responses like
    #: the names that look like credentials: ``{"headers": [...], "query_params": [...]}``.
    secret_names: dict[str, list[str]] = attrs.field(factory=dict)


class Record(msgspec.Struct, frozen=True, gc=False):
    """One normalized market-data record, ready to be stored.

    ``price`` and ``size`` are the source's own decimal digits (checked to be finite
    decimals), never a float. ``data`` is the record's raw JSON payload as UTF-8 bytes.
    ``dedup_key`` makes a retried insert idempotent: the source's trade id where it has one,
    else a hash of the payload and its receive time.

    Immutable; :func:`evolve_record` makes a changed copy. ``gc=False``: a record holds
    only strings, numbers, times and bytes, never a cycle, so the collector skips it.
    """

    connector_id: str | None
    exchange: str
    instrument: str | None
    price: str | None
    size: str | None
    side: str | None
    message_type: str
    timestamp: datetime
    received_at: datetime
    data: bytes
    dedup_key: str
    source: Protocol = "websocket"
    bid_price: str | None = None
    bid_size: str | None = None
    ask_price: str | None = None
    ask_size: str | None = None
    batch_id: int | None = None
    status_code: int | None = None
    response_time_ms: float | None = None
    #: The source's own id of the record (trade id, sequence), as text; ``None`` if it has
    #: none. ``dedup_key`` is built from it.
    source_id: str | None = None
    #: One id per connector run: new on every start and restart (``None`` for saves).
    session_id: str | None = None
    #: A saved message's ``messageNumber`` and ``format``, as the client sent them.
    message_number: int | None = None
    format: str | None = None


def evolve_record(record: Record, **changes: Any) -> Record:
    """``record`` with ``changes`` (the ``attrs.evolve`` of a Record)."""
    return msgspec.structs.replace(record, **changes)


RECORD_FIELDS: tuple[str, ...] = Record.__struct_fields__


@attrs.frozen(slots=True)
class StoredRecord:
    """A record after its transaction committed; ``id`` is its database id."""

    id: int
    record: Record


@attrs.frozen(slots=True)
class SourceBatch:
    """Raw frames from one connector, in arrival order, with their receive times
    (``time.time()`` seconds). Actors pass batches, never single frames.

    ``normalizer`` is the connector's own (a field mapping); ``None`` means the exchange's.
    """

    connector_id: str
    exchange: str
    frames: list[bytes | str]
    received_at: list[float]
    normalizer: Callable[..., Any] | None = None
    source: Protocol = "websocket"
    #: REST only: the response's status code and time, kept on every record from it.
    status_code: int | None = None
    response_time_ms: float | None = None
    #: The connector run these frames were read in (see ``Record.session_id``).
    session_id: str | None = None


@attrs.frozen
class ConnectorStatus:
    """A connector's live state and counters (since ``started_at``)."""

    connector_id: str
    status: str
    messages_received: int = 0
    records_stored: int = 0
    messages_rejected: int = 0
    control_messages: int = 0
    errors: int = 0
    reconnects: int = 0
    last_message_at: datetime | None = None
    last_error: str | None = None
    started_at: datetime | None = None
    messages_gap: int = 0
    records_duplicate: int = 0
    rejected_by_category: dict[str, int] = attrs.field(factory=dict)
    requests: int = 0
    skipped_ticks: int = 0
    last_status_code: int | None = None
    #: The instance that runs (or last ran) the connector, and when it said so.
    instance_id: str | None = None
    updated_at: datetime | None = None


@attrs.frozen
class GapEvent:
    """A stretch of time in which a connector may have missed data."""

    connector_id: str
    gap_from: datetime
    gap_to: datetime
    cause: str
    messages_lost: int | None = None


@attrs.frozen
class ErrorEvent:
    """A connector error worth keeping: when, what kind, and a redacted message."""

    connector_id: str
    occurred_at: datetime
    kind: str
    message: str


@attrs.frozen
class Rejected:
    """A message or record that could not be stored, kept as a dead letter."""

    connector_id: str | None
    received_at: datetime
    category: str
    reason: str
    raw: bytes


JournalEntry = GapEvent | ErrorEvent | Rejected
#: Where actors report gaps, errors and dead letters; it must never block.
Journal = Callable[[JournalEntry], None]


def no_journal(_: JournalEntry) -> None:
    """The default journal of an actor used on its own (tests, tools): drops entries."""
