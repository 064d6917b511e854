"""Authentication of outgoing REST requests, selected by ``auth_type``. Pure functions: the
time is passed in, so signatures are tested against fixed examples.

* ``None``: nothing.
* ``API_KEY``: ``api_key`` in a header (``auth_options.header``, default ``X-API-Key``) or,
  with ``auth_options.in = "query"``, as a query parameter (``auth_options.param``,
  default ``api_key``).
* ``BEARER``: ``Authorization: Bearer <bearer_token>``.
* ``BASIC``: ``Authorization: Basic base64(username:password)``.
* ``HMAC`` with ``auth_options.preset``:

  - ``binance``: adds ``timestamp`` (ms), then ``signature`` = hex HMAC-SHA256 of the query
    string (plus the body, if any) with ``api_secret``; ``X-MBX-APIKEY: <api_key>``.
  - ``okx``: ``OK-ACCESS-SIGN`` = base64 HMAC-SHA256 of timestamp + METHOD + request path
    (with query) + body; ``OK-ACCESS-KEY``, ``OK-ACCESS-TIMESTAMP`` (ISO 8601, ms, UTC),
    ``OK-ACCESS-PASSPHRASE``.
  - ``generic``: signs the concatenation of ``auth_options.sign`` parts (any of
    ``timestamp``, ``method``, ``path``, ``query``, ``body``); puts the signature in header
    ``signature_header`` (default ``X-Signature``) or query ``signature_param``; encoding
    ``hex`` (default) or ``base64``; the key in ``key_header`` (default ``X-API-Key``) and the
    timestamp (ms) in ``timestamp_header`` (default ``X-Timestamp``).

The query string sent is exactly the one signed: :func:`sign` returns the final URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

AUTH_TYPES = ("None", "API_KEY", "BEARER", "BASIC", "HMAC")
HMAC_PRESETS = ("binance", "okx", "generic")
SIGN_PARTS = ("timestamp", "method", "path", "query", "body")
OPTION_KEYS = frozenset(
    {
        "header",
        "in",
        "param",
        "preset",
        "sign",
        "signature_header",
        "signature_param",
        "encoding",
        "key_header",
        "timestamp_header",
    }
)
SECRET_FIELDS = ("api_key", "api_secret", "passphrase", "bearer_token", "username", "password")
#: Credentials each ``auth_type`` needs on a REST connector (HMAC's OKX preset: also the
#: passphrase). The OpenAPI document's conditions are built from this table too.
REQUIRED_SECRETS: dict[str, tuple[str, ...]] = {
    "API_KEY": ("api_key",),
    "BEARER": ("bearer_token",),
    "BASIC": ("username", "password"),
    "HMAC": ("api_key", "api_secret"),
}
OKX_EXTRA_SECRETS = ("passphrase",)
#: Header and query names that hold credentials, matched as parts of the name with case,
#: ``-`` and ``_`` ignored (``Authorization``, ``X-MBX-APIKEY``, ``OK-ACCESS-SIGN``,
#: ``apiKey``, ``session_token``, ``Cookie``, …). Their values are masked in responses;
#: every value is encrypted at rest whatever its name.
CREDENTIAL_NAME_PARTS = (
    "auth",
    "cookie",
    "sign",
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "passphrase",
    "credential",
    "session",
)


def is_credential_name(name: str) -> bool:
    """Whether a header or query parameter called ``name`` carries a credential."""
    folded = name.lower().replace("-", "").replace("_", "")
    return any(part in folded for part in CREDENTIAL_NAME_PARTS)


@attrs.frozen
class Credentials:
    """Decrypted secrets, held only in memory while a connector runs."""

    api_key: str | None = attrs.field(default=None, repr=False)
    api_secret: str | None = attrs.field(default=None, repr=False)
    passphrase: str | None = attrs.field(default=None, repr=False)
    bearer_token: str | None = attrs.field(default=None, repr=False)
    username: str | None = attrs.field(default=None, repr=False)
    password: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class OutgoingRequest:
    method: str
    url: str  # final URL, query string included
    headers: dict[str, str] = attrs.field(repr=False)
    body: bytes | None = attrs.field(default=None, repr=False)


def check_options(auth_type: str, options: Mapping[str, Any]) -> str | None:
    """A message naming what is wrong with ``auth_options``, or ``None``."""
    unknown = set(options) - OPTION_KEYS
    if unknown:
        return f"unknown option {sorted(unknown)[0]!r}"
    if options.get("in", "header") not in ("header", "query"):
        return "'in' must be header or query"
    if auth_type == "HMAC" and options.get("preset", "generic") not in HMAC_PRESETS:
        return f"'preset' must be one of {HMAC_PRESETS}"
    sign = options.get("sign", ["timestamp", "method", "path", "query", "body"])
    if not isinstance(sign, list) or any(part not in SIGN_PARTS for part in sign):
        return f"'sign' must be a list of {SIGN_PARTS}"
    if options.get("encoding", "hex") not in ("hex", "base64"):
        return "'encoding' must be hex or base64"
    for key in OPTION_KEYS - {"sign", "in", "preset", "encoding"}:
        value = options.get(key)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 100):
            return f"'{key}' must be a string of 1 to 100 characters"
    return None


def missing_secrets(auth_type: str, options: Mapping[str, Any], creds: Credentials) -> list[str]:
    """Which credentials ``auth_type`` needs but are not set."""
    need = REQUIRED_SECRETS.get(auth_type, ())
    if auth_type == "HMAC" and options.get("preset") == "okx":
        need += OKX_EXTRA_SECRETS
    return [name for name in need if not getattr(creds, name)]


def sign(
    method: str,
    url: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes | None,
    auth_type: str,
    options: Mapping[str, Any],
    creds: Credentials,
    now: datetime,
) -> OutgoingRequest:
    """Build the request to send, authenticated as ``auth_type`` says."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    out_headers = dict(headers)
    method = method.upper()
    body_text = body.decode() if body else ""

    if auth_type == "API_KEY":
        if options.get("in") == "query":
            query.append((options.get("param", "api_key"), creds.api_key or ""))
        else:
            out_headers[options.get("header", "X-API-Key")] = creds.api_key or ""
    elif auth_type == "BEARER":
        out_headers["Authorization"] = f"Bearer {creds.bearer_token}"
    elif auth_type == "BASIC":
        token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        out_headers["Authorization"] = f"Basic {token}"
    elif auth_type == "HMAC":
        secret = (creds.api_secret or "").encode()
        preset = options.get("preset", "generic")
        millis = str(int(now.timestamp() * 1000))
        if preset == "binance":
            query.append(("timestamp", millis))
            payload = urlencode(query) + body_text
            query.append(("signature", _hmac_hex(secret, payload)))
            out_headers["X-MBX-APIKEY"] = creds.api_key or ""
        elif preset == "okx":
            utc = now.astimezone(UTC)
            stamp = utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
            path = parts.path or "/"
            request_path = path + (f"?{urlencode(query)}" if query else "")
            prehash = stamp + method + request_path + body_text
            digest = hmac.new(secret, prehash.encode(), hashlib.sha256)
            out_headers["OK-ACCESS-KEY"] = creds.api_key or ""
            out_headers["OK-ACCESS-SIGN"] = base64.b64encode(digest.digest()).decode()
            out_headers["OK-ACCESS-TIMESTAMP"] = stamp
            out_headers["OK-ACCESS-PASSPHRASE"] = creds.passphrase or ""
        else:
            values = {
                "timestamp": millis,
                "method": method,
                "path": parts.path or "/",
                "query": urlencode(query),
                "body": body_text,
            }
            order = options.get("sign", list(SIGN_PARTS))
            payload = "".join(values[p] for p in order)
            raw = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
            signature = (
                base64.b64encode(raw).decode() if options.get("encoding") == "base64" else raw.hex()
            )
            out_headers[options.get("timestamp_header", "X-Timestamp")] = millis
            out_headers[options.get("key_header", "X-API-Key")] = creds.api_key or ""
            if options.get("signature_param"):
                query.append((options["signature_param"], signature))
            else:
                out_headers[options.get("signature_header", "X-Signature")] = signature
    final = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
    return OutgoingRequest(method, final, out_headers, body)


def _hmac_hex(secret: bytes, payload: str) -> str:
    return hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()
