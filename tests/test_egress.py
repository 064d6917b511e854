"""S1: the egress guard. No connection is ever opened to a denied address, whatever the
spelling; checks run on the resolved address."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
import trio

from engine.egress import EgressDenied, EgressPolicy, GuardedTransport, unwrap
from engine.http_client import PollingClient

STRICT = EgressPolicy()
OPEN = EgressPolicy(allow_private=True)


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "169.254.0.1",
        "fd00:ec2::254",
        "100.100.100.200",
        "192.0.0.192",
        "0.0.0.0",
        "::",
        "fe80::1",
        "224.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    ],
)
def test_metadata_and_link_local_are_always_denied(address: str) -> None:
    for policy in (STRICT, OPEN):
        with pytest.raises(EgressDenied):
            policy.check(ipaddress.ip_address(address), address, 80)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",
        "::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "::127.0.0.1",
    ],
)
def test_private_ranges_need_permission(address: str) -> None:
    with pytest.raises(EgressDenied):
        STRICT.check(ipaddress.ip_address(address), address, 80)
    OPEN.check(ipaddress.ip_address(address), address, 80)
    allowed = EgressPolicy.from_settings(False, [f"{address}:80"])
    allowed.check(ipaddress.ip_address(address), address, 80)
    with pytest.raises(EgressDenied):
        allowed.check(ipaddress.ip_address(address), address, 81)


def test_public_addresses_pass() -> None:
    for address in ("93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"):
        STRICT.check(ipaddress.ip_address(address), address, 443)


def test_unwrap() -> None:
    assert unwrap(ipaddress.ip_address("::ffff:1.2.3.4")) == ipaddress.ip_address("1.2.3.4")
    assert unwrap(ipaddress.ip_address("2002:0102:0304::")) == ipaddress.ip_address("1.2.3.4")


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "127.0.0.1",
        "0177.0.0.1",
        "2130706433",
        "0x7f.0.0.1",
        "127.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
    ],
)
async def test_loopback_spellings_are_resolved_then_denied(
    nursery: trio.Nursery, host: str
) -> None:
    """A real listener on loopback proves no connection reaches it."""
    accepted: list[object] = []

    async def handler(stream: trio.SocketStream) -> None:
        accepted.append(stream)

    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    port = listeners[0].socket.getsockname()[1]
    transport = GuardedTransport(STRICT)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(
            (httpx.ConnectError, EgressDenied, httpx.UnsupportedProtocol, httpx.InvalidURL)
        ):
            await client.get(f"http://{host}:{port}/")
    with pytest.raises(EgressDenied):
        await STRICT.open_stream(host.strip("[]"), port, False)
    await trio.sleep(0.05)
    assert accepted == []


async def test_redirect_to_a_denied_address_is_not_followed(nursery: trio.Nursery) -> None:
    hits: list[bytes] = []

    async def redirector(stream: trio.SocketStream) -> None:
        hits.append(await stream.receive_some())
        await stream.send_all(
            b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        await stream.aclose()

    listeners = await nursery.start(trio.serve_tcp, redirector, 0)
    port = listeners[0].socket.getsockname()[1]
    policy = EgressPolicy.from_settings(False, [f"127.0.0.1:{port}"])
    async with httpx.AsyncClient(transport=GuardedTransport(policy), follow_redirects=True) as c:
        with pytest.raises(EgressDenied):
            await c.get(f"http://127.0.0.1:{port}/")
    assert len(hits) == 1  # the allowed first hop only
    # The pollers' own client follows redirects through the same guard.
    lean = PollingClient(policy.open_stream)
    with pytest.raises(EgressDenied):
        await lean.request("GET", f"http://127.0.0.1:{port}/", {}, None, 1000)
    assert len(hits) == 2
