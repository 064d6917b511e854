"""The one exception tree of Sluice, split by what the caller does about it.

::

    SluiceError
    ├── Unavailable              retry later: the thing we talk to is not answering
    │   ├── SourceUnavailable    a source (WebSocket / REST endpoint) failed or closed
    │   │   └── SourceRefused    it will not serve us as configured: retry only after long
    │   └── SinkUnavailable      PostgreSQL is unreachable or the pool timed out
    ├── BadMessage               drop and count: one source message we cannot use
    ├── BadRequest               reject: an API caller sent something invalid (→ 4xx)
    │   └── NotFound             the thing named does not exist (→ 404)
    └── ConfigurationError       refuse to start: the set-up is wrong

Anything else is a bug and crashes the actor, whose supervisor restarts it within its
restart budget. Third-party errors are translated once, at the edge, with ``raise X from exc``.
"""

from __future__ import annotations


class SluiceError(Exception):
    """Base of every error Sluice raises on purpose."""


class Unavailable(SluiceError):
    """Something we depend on is not answering; the caller retries with backoff."""


class SourceUnavailable(Unavailable):
    """A data source failed, refused or closed the connection.

    ``kind`` is a short stable word for the error log: ``connect_failed``, ``closed``,
    ``pong_timeout``, ``stale``, ``oversized``, ``protocol``.
    """

    def __init__(self, message: str, kind: str = "closed") -> None:
        super().__init__(message)
        self.kind = kind


class SourceRefused(SourceUnavailable):
    """The source will not serve us as configured — a destination the egress policy
    refuses, credentials refused, a subscription the exchange says is invalid — until the
    configuration changes: the connector goes to ``error`` with the reason, says it once,
    and tries again only after a long backoff."""


class SinkUnavailable(Unavailable):
    """PostgreSQL is unreachable, or no pooled connection came within the timeout."""


class BadMessage(SluiceError):
    """One source message cannot be used; it is counted and logged, never fatal.

    ``category`` is a short stable word (``non_json``, ``invalid_utf8``, ``binary``,
    ``oversized``, ``bad_value``, …) used as the counter name.
    """

    def __init__(self, category: str, detail: str, *, field: str | None = None) -> None:
        super().__init__(f"{category}: {detail}")
        self.category = category
        self.detail = detail
        #: The request field at fault, when the message came with explicit overrides.
        self.field = field


class BadRequest(SluiceError):
    """An API request is invalid; the server answers 4xx with this message."""


class NotFound(BadRequest):
    """The resource named in a request does not exist."""


class ConfigurationError(SluiceError):
    """The configuration is unusable; Sluice refuses to start and says why."""
