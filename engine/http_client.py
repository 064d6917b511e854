"""A lean HTTP/1.1 client for REST pollers: one kept-alive connection per poller.

Why not httpx for every poll: measured on the project machine, httpx on Trio costs about
0.6 ms of CPU per request; a thousand pollers ticking once a second then need most of a
core for the client alone and their ticks start tens of milliseconds late. A poller sends
the same request to the same origin again and again, so it needs much less: h11 over one
Trio stream it keeps open, opened through the egress guard (every address checked, TLS
verified against the host name), gzip/deflate decoded with the size cap applied to the
decoded bytes, redirects followed (each hop guarded again), one overall timeout.

Error handling: network failures, timeouts, protocol errors and redirect loops raise
:class:`~engine.errors.SourceUnavailable` with a message that holds no URL or header;
:class:`ResponseTooLarge` when the decoded body passes the cap. After any error the
connection is dropped and the next request opens a fresh one.

Resource handling: :meth:`aclose` closes the kept connection; pollers call it on stop.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import attrs
import h11
import httpx
import trio

from .errors import SourceUnavailable
from .redact import describe_http_error
from .transport import StreamOpener

RECEIVE_BYTES = 65536
MAX_REDIRECTS = 5
REDIRECTS = {301, 302, 303, 307, 308}
USER_AGENT = "sluice"


class ResponseTooLarge(Exception):
    pass


@attrs.frozen
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes


class HttpClient(Protocol):
    """What a REST poller needs from an HTTP client."""

    async def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, max_bytes: int
    ) -> Response: ...

    async def aclose(self) -> None: ...


@attrs.define(eq=False)
class HttpxClient:
    """The same interface over a shared ``httpx.AsyncClient`` (``SLUICE_HTTP_CLIENT=httpx``
    for proxies from the environment; tests use it with ``httpx.MockTransport``)."""

    client: httpx.AsyncClient

    async def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, max_bytes: int
    ) -> Response:
        try:
            async with self.client.stream(method, url, headers=headers, content=body) as response:
                chunks, size = [], 0
                decoded: Any = response.aiter_bytes()  # an async generator: aclose()-able
                async with contextlib.aclosing(decoded) as pieces:
                    async for chunk in pieces:  # decoded: the cap is on real size
                        size += len(chunk)
                        if size > max_bytes:
                            raise ResponseTooLarge
                        chunks.append(chunk)
                return Response(
                    response.status_code,
                    {k.lower(): v for k, v in response.headers.items()},
                    b"".join(chunks),
                )
        except httpx.HTTPError as exc:
            raise SourceUnavailable(describe_http_error(exc), "request_failed") from None

    async def aclose(self) -> None:
        pass  # shared; its owner closes it


@attrs.define(eq=False)
class PollingClient:
    """Sends requests for one poller, over one connection kept open between them."""

    opener: StreamOpener
    timeout: float = 30.0
    _origin: tuple[str, str, int] | None = None
    _stream: trio.abc.Stream | None = None
    _conn: h11.Connection | None = None

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        max_bytes: int,
    ) -> Response:
        try:
            with trio.fail_after(self.timeout):
                for _ in range(MAX_REDIRECTS + 1):
                    response = await self._exchange(method, url, headers, body, max_bytes)
                    location = response.headers.get("location")
                    if response.status not in REDIRECTS or not location:
                        return response
                    url = urljoin(url, location)
                    if response.status == 303 or (
                        response.status in (301, 302) and method == "POST"
                    ):
                        method, body = "GET", None
                raise SourceUnavailable("too many redirects", "request_failed")
        except trio.TooSlowError:
            await self.aclose()
            raise SourceUnavailable(
                f"timed out after {self.timeout:g} s", "request_failed"
            ) from None
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            await self.aclose()
            raise SourceUnavailable("request failed (connection error)", "request_failed") from None
        except BaseException:
            await self.aclose()
            raise

    async def _exchange(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, max_bytes: int
    ) -> Response:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise SourceUnavailable("only http and https URLs can be polled", "request_failed")
        port = parts.port or (443 if scheme == "https" else 80)
        origin = (scheme, parts.hostname, port)
        if origin != self._origin or self._stream is None or self._conn is None:
            await self.aclose()
            self._stream = await self.opener(parts.hostname, port, scheme == "https")
            self._conn = h11.Connection(h11.CLIENT)
            self._origin = origin
        elif self._conn.our_state is h11.MUST_CLOSE or self._conn.their_state is h11.MUST_CLOSE:
            await self.aclose()
            return await self._exchange(method, url, headers, body, max_bytes)
        stream, conn = self._stream, self._conn
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        out = [
            ("Host", host),
            ("User-Agent", USER_AGENT),
            ("Accept-Encoding", "gzip, deflate"),
        ]
        out += [(k, v) for k, v in headers.items() if k.lower() not in ("host", "content-length")]
        if body is not None:
            out.append(("Content-Length", str(len(body))))
        data = conn.send(h11.Request(method=method, target=target, headers=out))
        if body:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)

        response: h11.Response | None = None
        chunks: list[bytes] = []
        size = 0
        decoder: zlib._Decompress | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(RECEIVE_BYTES)))
            elif isinstance(event, h11.Response):
                response = event
                encoding = _header(event.headers, b"content-encoding").lower()
                if encoding == "gzip":
                    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
                elif encoding == "deflate":
                    decoder = zlib.decompressobj()
            elif isinstance(event, h11.Data | h11.EndOfMessage):
                if isinstance(event, h11.Data):
                    piece = bytes(event.data)
                    if decoder is not None:
                        piece = decoder.decompress(piece, max_bytes + 1 - size)
                else:  # the end: what the decoder still holds
                    piece = decoder.flush() if decoder is not None else b""
                size += len(piece)
                if size > max_bytes:
                    raise ResponseTooLarge  # request() drops the half-read connection
                chunks.append(piece)
                if isinstance(event, h11.EndOfMessage):
                    break
            elif isinstance(event, h11.ConnectionClosed):
                raise SourceUnavailable("connection closed mid-response", "request_failed")
            # InformationalResponse (1xx): keep reading
        assert response is not None
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            await self.aclose()
        return Response(
            status=response.status_code,
            headers=_headers(response.headers),
            body=b"".join(chunks),
        )

    async def aclose(self) -> None:
        stream, self._stream, self._conn, self._origin = self._stream, None, None, None
        if stream is not None:
            await trio.aclose_forcefully(stream)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return ""


def _headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for key, value in headers:
        name = key.decode("latin-1")
        text = value.decode("latin-1")
        merged[name] = f"{merged[name]}, {text}" if name in merged else text
    return merged
