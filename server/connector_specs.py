"""From a validated request body to a stored :class:`~engine.models.ConnectorSpec`:
protocol and exchange detection, the egress check of the URL, auth checks, and encryption
of every secret (credentials, header and query values) bound to the connector's id."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import attrs

from engine.auth import SECRET_FIELDS, Credentials, missing_secrets
from engine.crypto import Keyring
from engine.egress import EgressDenied, EgressPolicy
from engine.models import ConnectorSpec
from engine.sources import detect_exchange, protocol_for

from .schemas import MASK, ConnectorCreate, auth_options_dict
from .validation import RequestValidationError, error, structure


class EgressRefused(RequestValidationError):
    """``api_url`` is well formed but the egress policy refuses its address (→ 403): a
    policy decision about a valid request, not a malformed one."""

    status = 403


# Fields a client may send; everything else (connector_id, status, …) is server-owned.
PUBLIC_FIELDS = [a.name for a in attrs.fields(ConnectorCreate)]


def editable_view(spec: ConnectorSpec) -> dict[str, Any]:
    """The stored connector as a create body, secrets left out (they cannot be read)."""
    view = {name: getattr(spec, name) for name in PUBLIC_FIELDS if hasattr(spec, name)}
    view["headers"] = {}
    view["query_params"] = {}
    view["secret_headers"] = spec.secret_names.get("headers", [])
    view["secret_query_params"] = spec.secret_names.get("query_params", [])
    for name in SECRET_FIELDS:
        view.pop(name, None)
    return view


def build_spec(
    raw: Any,
    connector_id: str,
    keyring: Keyring,
    egress: EgressPolicy,
    existing: ConnectorSpec | None = None,
) -> ConnectorSpec:
    """Validate ``raw`` (a whole body, or for an update the changed fields) into a spec."""
    if existing is not None and isinstance(raw, dict):
        merged = {**editable_view(existing), **raw}
    else:
        merged = raw
    body = structure(merged, ConnectorCreate)
    protocol = protocol_for(body.api_url)
    assert protocol is not None  # the schema checked the scheme
    parts = urlsplit(body.api_url)
    try:
        egress.check_literal(parts.hostname or "", parts.port or _default_port(parts.scheme))
    except EgressDenied:
        raise EgressRefused(
            [
                {
                    "loc": ["body", "api_url"],
                    "msg": "destination not allowed by the egress policy",
                    "type": "egress_denied",
                }
            ]
        ) from None
    auth_options = auth_options_dict(body.auth_options)
    exchange = (body.exchange or detect_exchange(body.api_url)).lower()
    app_ping = body.app_ping
    if "app_ping" not in merged and exchange == "okx" and protocol == "websocket":
        app_ping = "ping"  # OKX closes connections that send nothing for 30 s

    def seal(field: str, value: str) -> str:
        return keyring.encrypt(value, connector_id, field)

    credentials = dict(existing.credentials) if existing else {}
    for name in SECRET_FIELDS:
        if isinstance(raw, dict) and name in raw:
            value = getattr(body, name)
            if value is None:
                credentials.pop(name, None)
            else:
                credentials[name] = seal(name, value)
    headers = _sealed_map(raw, "headers", body.headers, existing, "header", seal)
    params = _sealed_map(raw, "query_params", body.query_params, existing, "query", seal)
    present = Credentials(**{name: "set" for name in credentials})
    missing = missing_secrets(body.auth_type, auth_options, present)
    if missing and protocol == "rest":
        raise error(["body", missing[0]], f"required by auth_type {body.auth_type}")
    return ConnectorSpec(
        connector_id=connector_id,
        name=body.name.strip(),
        api_url=body.api_url,
        protocol=protocol,
        exchange=exchange,
        http_method=body.http_method,
        headers=headers,
        query_params=params,
        auth_type=body.auth_type,
        polling_interval=body.polling_interval,
        subscribe_messages=body.subscribe_messages,
        desired_state=existing.desired_state if existing else "stopped",
        ping_interval=body.ping_interval,
        pong_timeout=body.pong_timeout,
        stale_timeout=body.stale_timeout,
        app_ping=app_ping,
        app_ping_interval=body.app_ping_interval,
        field_mapping=body.field_mapping,
        retention_days=body.retention_days,
        credentials=credentials,
        auth_options=auth_options,
        request_body=body.request_body,
        secret_names={
            "headers": body.secret_headers,
            "query_params": body.secret_query_params,
        },
    )


def _sealed_map(
    raw: Any,
    key: str,
    given: dict[str, str],
    existing: ConnectorSpec | None,
    prefix: str,
    seal: Any,
) -> dict[str, str]:
    old: dict[str, str] = getattr(existing, key) if existing else {}
    if existing is not None and not (isinstance(raw, dict) and key in raw):
        return dict(old)
    out = {}
    for name, value in given.items():
        if value == MASK and name in old:
            out[name] = old[name]  # a masked value sent back unchanged keeps the secret
        else:
            out[name] = seal(f"{prefix}:{name}", value)
    return out


def _default_port(scheme: str) -> int:
    return {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(scheme, 0)
