"""The one choke point for secrets in error texts and logs.

httpx puts full URLs (query strings included, where API keys and signatures live) into
its exception texts. Nothing from a request or its errors is logged or stored except
through these functions.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

import httpx


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` with user info and the query string removed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def describe_http_error(exc: BaseException) -> str:
    """What went wrong with a request, without the URL's query or any header."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.HTTPError):
        return f"request failed ({type(exc).__name__})"
    return type(exc).__name__


_URL_QUERY = re.compile(r"((?:https?|wss?)://[^\s?#'\"]+)\?[^\s'\"]*", re.IGNORECASE)
_AUTH_HEADER = re.compile(
    r"(authorization|x-mbx-apikey|ok-access-[a-z]+|x-api-key)(['\"]?\s*[:=]\s*['\"]?)(?:(?:bearer|basic)\s+)?[^\s'\",}]+",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """Remove URL query strings and credential header values from free text."""
    text = _URL_QUERY.sub(r"\1?<redacted>", text)
    return _AUTH_HEADER.sub(r"\1\2<redacted>", text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record's final message (installed on the
    handlers by ``server.logs``), so a library that logs URLs cannot leak a query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
