"""Outbound proxies for sources, as curl and httpx read them from the environment:
``HTTPS_PROXY`` for TLS sources (``https://``, ``wss://``), ``HTTP_PROXY`` for the others,
``ALL_PROXY`` as the fallback, ``NO_PROXY`` for hosts to reach directly (lower-case
spellings too). Every source goes through an HTTP ``CONNECT`` tunnel, TLS (if any) is
then spoken end to end with the source, and credentials in the proxy URL are sent as
``Proxy-Authorization: Basic`` and never appear in a log or an error text.

Error handling: a proxy that cannot be reached, or answers anything but 2xx to the
``CONNECT``, is :class:`~engine.errors.SourceUnavailable` (the connector retries).
"""

from __future__ import annotations

import base64
import os
import urllib.request
from urllib.parse import unquote, urlsplit

import attrs
import trio

from .errors import SourceUnavailable

MAX_RESPONSE_HEAD = 16 * 1024


@attrs.frozen
class Proxy:
    host: str
    port: int
    authorization: str | None = attrs.field(default=None, repr=False)


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name) or os.environ.get(name.lower())
        if value:
            return value
    return None


def proxy_for(host: str, secure: bool) -> Proxy | None:
    """The proxy to reach ``host`` through, or ``None`` for a direct connection."""
    url = _env("HTTPS_PROXY" if secure else "HTTP_PROXY", "ALL_PROXY")
    if not url:
        return None
    if urllib.request.proxy_bypass_environment(host):  # type: ignore[attr-defined]
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        return None
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode()
    return Proxy(parts.hostname, parts.port or 8080, authorization)


async def open_tunnel(proxy: Proxy, host: str, port: int) -> trio.abc.Stream:
    """A TCP stream to ``host:port`` through ``proxy``'s ``CONNECT`` tunnel."""
    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(proxy.host, proxy.port)
    except OSError as exc:
        raise SourceUnavailable("cannot reach the outbound proxy", "connect_failed") from exc
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
    if proxy.authorization:
        head += f"Proxy-Authorization: {proxy.authorization}\r\n"
    try:
        await stream.send_all((head + "\r\n").encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = await stream.receive_some(4096)
            if not chunk or len(response) > MAX_RESPONSE_HEAD:
                raise SourceUnavailable("the outbound proxy closed the tunnel", "connect_failed")
            response += chunk
    except (trio.BrokenResourceError, OSError) as exc:
        await trio.aclose_forcefully(stream)
        raise SourceUnavailable("the outbound proxy closed the tunnel", "connect_failed") from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    status_line = response.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].startswith(b"2"):
        await trio.aclose_forcefully(stream)
        code = status_line[1].decode(errors="replace") if len(status_line) > 1 else "?"
        raise SourceUnavailable(f"the outbound proxy refused the tunnel (HTTP {code})", "proxy")
    head_end = response.index(b"\r\n\r\n") + 4
    if head_end < len(response):  # bytes of the source that came with the answer
        return _Prefixed(stream, response[head_end:])
    return stream


class _Prefixed(trio.abc.Stream):
    """A stream that first yields bytes already read from it."""

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self._inner = inner
        self._prefix = prefix

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            return data
        return await self._inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._inner.aclose()
