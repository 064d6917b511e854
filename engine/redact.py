"""The one choke point for secrets in error texts and logs.

httpx puts full URLs (query strings included, where API keys and signatures live) into
its exception texts. Nothing from a request or its errors is logged or stored except
through these functions.
"""

from __future__ import annotations

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
