"""Sources behind an outbound proxy: WebSocket and REST sources reach the source through
an HTTP ``CONNECT`` tunnel named by ``HTTP(S)_PROXY``, with the proxy's credentials, and
directly when ``NO_PROXY`` names the host; a refusing proxy is an error that names no
credential. The proxy here is a small Trio one on loopback that records what it was
asked."""

from __future__ import annotations

import base64

import attrs
import httpx
import pytest
import trio

from engine.egress import EgressPolicy
from engine.errors import SourceUnavailable
from server.serve import Service

from .fake_exchange import FakeExchange

pytestmark = pytest.mark.e2e


@attrs.define(eq=False)
class ConnectProxy:
    port: int = 0
    requests: list[bytes] = attrs.field(factory=list)
    refuse: bool = False

    async def run(
        self, *, task_status: trio.TaskStatus[ConnectProxy] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await client.receive_some(4096)
            if not chunk:
                return
            head += chunk
        self.requests.append(head)
        if self.refuse:
            await client.send_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
            await client.aclose()
            return
        target = head.split(b" ", 2)[1].decode()
        host, _, port = target.rpartition(":")
        upstream = await trio.open_tcp_stream(host.strip("[]"), int(port))
        async with upstream, client:
            await client.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pipe, client, upstream, nursery.cancel_scope)
                nursery.start_soon(_pipe, upstream, client, nursery.cancel_scope)


async def _pipe(src: trio.abc.Stream, dst: trio.abc.Stream, scope: trio.CancelScope) -> None:
    try:
        while data := await src.receive_some(65536):
            await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()


async def test_websocket_sources_go_through_the_proxy_with_its_credentials(
    nursery: trio.Nursery,
    service: Service,
    exchange: FakeExchange,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy: ConnectProxy = await nursery.start(ConnectProxy().run)
    monkeypatch.setenv("HTTP_PROXY", f"http://trader:s3cret@127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", "example.invalid")
    with trio.fail_after(20):
        # trust_env=False: this client talks to Sluice, not through the proxy.
        async with httpx.AsyncClient(base_url=service.url, trust_env=False) as client:
            body = {"name": "via proxy", "api_url": exchange.url("/binance?count=20")}
            cid = (await client.post("/api/connectors", json=body)).json()["connector_id"]
            await client.post(f"/api/connectors/{cid}/start")
            while (await client.get(f"/api/connectors/{cid}/status")).json()["records_stored"] < 20:
                await trio.sleep(0.05)
    [request] = proxy.requests
    assert request.startswith(f"CONNECT 127.0.0.1:{exchange.port} HTTP/1.1\r\n".encode())
    token = base64.b64encode(b"trader:s3cret").decode()
    assert f"Proxy-Authorization: Basic {token}\r\n".encode() in request


async def test_no_proxy_hosts_are_reached_directly(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, exchange: FakeExchange
) -> None:
    proxy: ConnectProxy = await nursery.start(ConnectProxy().run)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    stream = await EgressPolicy(allow_private=True).open_stream("127.0.0.1", exchange.port, False)
    await stream.aclose()
    assert proxy.requests == []


async def test_a_refusing_proxy_is_an_error_without_its_credentials(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, exchange: FakeExchange
) -> None:
    proxy: ConnectProxy = await nursery.start(ConnectProxy(refuse=True).run)
    monkeypatch.setenv("HTTPS_PROXY", f"http://trader:s3cret@127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", "example.invalid")
    with pytest.raises(SourceUnavailable) as failed:
        await EgressPolicy(allow_private=True).open_stream("127.0.0.1", exchange.port, True)
    assert "HTTP 407" in str(failed.value)
    assert "s3cret" not in str(failed.value)
    assert "trader" not in str(failed.value)
