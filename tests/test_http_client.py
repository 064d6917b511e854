"""The REST pollers' own HTTP/1.1 client against a scripted loopback server."""

from __future__ import annotations

import gzip
import zlib

import attrs
import h11
import pytest
import trio

from engine.errors import SourceUnavailable
from engine.http_client import PollingClient, ResponseTooLarge
from engine.transport import open_stream


@attrs.define(eq=False)
class Server:
    """Answers each request with what ``route`` returns: (status, headers, body chunks).
    Keeps connections alive unless told otherwise; counts connections and requests."""

    connections: int = 0
    requests: list[h11.Request] = attrs.field(factory=list)
    port: int = 0

    def route(self, request: h11.Request) -> tuple[int, list[tuple[str, str]], list[bytes]]:
        path = request.target.decode()
        if path == "/json":
            return 200, [("Content-Type", "application/json")], [b'{"ok":', b"true}"]
        if path == "/gzip":
            body = gzip.compress(b'{"n":"' + b"7" * 5000 + b'"}')
            return 200, [("Content-Encoding", "gzip"), ("Content-Length", str(len(body)))], [body]
        if path == "/deflate":
            return 200, [("Content-Encoding", "deflate")], [zlib.compress(b'{"d":1}')]
        if path == "/moved":
            return 302, [("Location", "/json")], []
        if path == "/see-other":
            return 303, [("Location", f"http://127.0.0.1:{self.port}/json")], []
        if path == "/loop":
            return 302, [("Location", "/loop")], []
        if path == "/close":
            return 200, [("Connection", "close")], [b"[1]"]
        if path == "/slow":
            return -1, [], []
        return 404, [], [b"{}"]

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some()
                    if not data:
                        return
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    self.requests.append(event)
                    continue
                if isinstance(event, h11.EndOfMessage):
                    status, headers, chunks = self.route(self.requests[-1])
                    if status < 0:
                        await trio.sleep_forever()
                    out = conn.send(h11.Response(status_code=status, headers=headers))
                    for chunk in chunks:
                        out += conn.send(h11.Data(data=chunk))
                    out += conn.send(h11.EndOfMessage())
                    await stream.send_all(out)
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    return


@pytest.fixture
async def server(nursery: trio.Nursery) -> Server:
    s = Server()
    listeners = await nursery.start(trio.serve_tcp, s.handle, 0)
    s.port = listeners[0].socket.getsockname()[1]
    return s


def url(server: Server, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


async def test_requests_reuse_one_connection_and_carry_headers_and_body(server: Server) -> None:
    client = PollingClient(open_stream)
    for _ in range(3):
        response = await client.request(
            "POST", url(server, "/json"), {"X-Key": "k"}, b'{"q":1}', 1000
        )
        assert (response.status, response.body) == (200, b'{"ok":true}')
        assert response.headers["content-type"] == "application/json"
    assert server.connections == 1
    sent = dict(server.requests[0].headers)
    assert sent[b"x-key"] == b"k"
    assert sent[b"content-length"] == b"7"
    assert sent[b"host"] == f"127.0.0.1:{server.port}".encode()
    await client.aclose()


async def test_compressed_bodies_are_decoded_and_capped_after_decoding(server: Server) -> None:
    client = PollingClient(open_stream)
    response = await client.request("GET", url(server, "/gzip"), {}, None, 10_000)
    assert response.body == b'{"n":"' + b"7" * 5000 + b'"}'
    deflated = await client.request("GET", url(server, "/deflate"), {}, None, 10_000)
    assert deflated.body == b'{"d":1}'
    with pytest.raises(ResponseTooLarge):  # 60 bytes on the wire, 5,008 decoded
        await client.request("GET", url(server, "/gzip"), {}, None, 1000)
    # The connection was dropped mid-body; the next request opens a fresh one.
    assert (await client.request("GET", url(server, "/json"), {}, None, 1000)).status == 200
    await client.aclose()


async def test_redirects_are_followed_and_bounded(server: Server) -> None:
    client = PollingClient(open_stream)
    assert (await client.request("GET", url(server, "/moved"), {}, None, 1000)).body == (
        b'{"ok":true}'
    )
    other = await client.request("POST", url(server, "/see-other"), {}, b"x", 1000)
    assert other.status == 200
    assert server.requests[-1].method == b"GET"  # 303: the method becomes GET
    with pytest.raises(SourceUnavailable, match="too many redirects"):
        await client.request("GET", url(server, "/loop"), {}, None, 1000)
    await client.aclose()


async def test_connection_close_and_timeouts(server: Server) -> None:
    client = PollingClient(open_stream, timeout=0.5)
    for _ in range(2):
        response = await client.request("GET", url(server, "/close"), {}, None, 1000)
        assert response.body == b"[1]"
    assert server.connections == 2  # the server closed after each answer
    with pytest.raises(SourceUnavailable, match="timed out"):
        await client.request("GET", url(server, "/slow"), {}, None, 1000)
    assert (await client.request("GET", url(server, "/json"), {}, None, 1000)).status == 200
    await client.aclose()


async def test_only_http_urls_and_refused_connections_are_errors(server: Server) -> None:
    client = PollingClient(open_stream)
    with pytest.raises(SourceUnavailable, match="only http"):
        await client.request("GET", "ftp://127.0.0.1/x", {}, None, 1000)
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(SourceUnavailable, match="connection error"):
        await client.request("GET", f"http://127.0.0.1:{port}/", {}, None, 1000)
