"""The egress guard: every outbound connection (REST and WebSocket) is checked against the
address actually connected to, after DNS resolution.

* Always denied: link-local (169.254.0.0/16, fe80::/10) and cloud metadata addresses
  (169.254.169.254, fd00:ec2::254, 100.100.100.200, 192.0.0.192), unspecified, multicast,
  broadcast and reserved ranges.
* Denied unless ``SLUICE_ALLOW_PRIVATE_NETWORKS`` is on or ``host:port`` is in
  ``SLUICE_EGRESS_ALLOW``: loopback, private (RFC 1918, fc00::/7) and CGNAT (100.64.0.0/10).
* IPv4 embedded in IPv6 (mapped, compatible, NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo)
  is unwrapped and checked as IPv4.
* A host name is resolved once; if any of its addresses is denied the connection is
  refused, and the connection goes to a checked address (no second lookup to rebind).

The error a user sees says only that the destination is not allowed: never whether a port
was open. Only http, https, ws and wss URLs are accepted anywhere.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import attrs
import httpcore
import httpx
import trio

from .errors import SourceRefused, SourceUnavailable
from .proxy import open_tunnel, proxy_for

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALWAYS_DENIED = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "169.254.0.0/16",
        "192.0.0.0/24",  # IETF protocol assignments, incl. 192.0.0.192 (Oracle metadata)
        "100.100.100.200/32",  # Alibaba metadata
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "fe80::/10",
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "ff00::/8",
    )
]
PRIVATE = [
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "198.18.0.0/15",
        "::1/128",
        "fc00::/7",
    )
]
NAT64 = ipaddress.ip_network("64:ff9b::/96")
SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
TEREDO = ipaddress.ip_network("2001::/32")


class EgressDenied(SourceRefused):
    """The destination is not allowed by the egress policy."""

    def __init__(self, message: str = "destination not allowed by the egress policy") -> None:
        super().__init__(message, "egress_denied")


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address embedded in an IPv6 one, if any; else the address itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    packed = address.packed
    if address in NAT64:
        return ipaddress.IPv4Address(packed[12:])
    if address in SIX_TO_FOUR:
        return ipaddress.IPv4Address(packed[2:6])
    if address in TEREDO and address.teredo is not None:
        return address.teredo[1]
    if packed[:12] == bytes(12) and int(address) > 1:  # IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(packed[12:])
    return address


@attrs.frozen
class EgressPolicy:
    allow_private: bool = False
    allow: frozenset[tuple[str, int]] = frozenset()

    @classmethod
    def from_settings(cls, allow_private: bool, allow: Iterable[str]) -> EgressPolicy:
        pairs = set()
        for item in allow:
            host, _, port = item.strip().rpartition(":")
            pairs.add((host.strip("[]").lower(), int(port)))
        return cls(allow_private, frozenset(pairs))

    def check(self, address: IPAddress, host: str, port: int) -> None:
        """Raise :class:`EgressDenied` unless connecting to ``address`` is allowed."""
        ip = unwrap(address)
        if any(ip in net for net in ALWAYS_DENIED if net.version == ip.version):
            raise EgressDenied()
        private = any(ip in net for net in PRIVATE if net.version == ip.version)
        if private and not (self.allow_private or (host.lower(), port) in self.allow):
            raise EgressDenied()

    def check_literal(self, host: str, port: int) -> None:
        """For URL validation: deny an IP-literal host that can never be allowed; names
        are checked when connecting."""
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return
        self.check(address, host, port)

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every address of ``host``, each checked; raises :class:`EgressDenied`."""
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise SourceUnavailable("cannot resolve the host name", "connect_failed") from exc
        addresses = []
        for info in infos:
            text = str(info[4][0])
            self.check(ipaddress.ip_address(text.split("%")[0]), host, port)
            if text not in addresses:
                addresses.append(text)
        return addresses

    async def open_stream(self, host: str, port: int, secure: bool) -> trio.abc.Stream:
        """A stream opener for the WebSocket transport and the REST client that goes
        through the guard, and through the outbound proxy the environment names
        (``HTTPS_PROXY`` for TLS sources, ``HTTP_PROXY`` otherwise, ``ALL_PROXY``,
        ``NO_PROXY``; see :mod:`engine.proxy`). The guard judges the final destination
        either way."""
        addresses = await self.resolve(host, port)
        proxy = proxy_for(host, secure)
        stream: trio.abc.Stream | None = None
        if proxy is not None:
            stream = await open_tunnel(proxy, host, port)
        for address in addresses if stream is None else ():
            try:
                stream = await trio.open_tcp_stream(address, port)
                break
            except OSError:
                continue
        if stream is None:
            raise SourceUnavailable("cannot connect", "connect_failed")
        if not secure:
            return stream
        tls = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=host)
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tls)
            raise
        return tls


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # TLS later uses the request's host name for SNI and certificate checks, so
        # connecting to the checked IP literal keeps HTTPS verification intact.
        last: Exception | None = None
        for address in await self._policy.resolve(host, port):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise httpcore.ConnectError("cannot connect") from last

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise EgressDenied()

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with every TCP connection checked by the egress policy."""

    def __init__(self, policy: EgressPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        limits = kwargs.get(
            "limits", httpx.Limits(max_connections=200, max_keepalive_connections=50)
        )
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(policy),
        )
