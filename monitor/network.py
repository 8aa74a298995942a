"""Sockets for feeds: which addresses a fetch may reach, and the connections to them.

The host is resolved here, every address checked against the policy, and the socket
opened to the checked address (GuardedBackend), so DNS cannot answer differently
between the check and the connect. The connections are plain asyncio streams
(AsyncioStream): httpcore's default streams go through anyio, whose cancel scopes and
attribute look-ups cost a sixth of a warm poll's fetching (measured) for nothing a
feed fetcher uses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
from httpcore._utils import is_socket_readable

from monitor.errors import FetchError

ALLOW_PRIVATE_ENV = "REELWATCH_ALLOW_PRIVATE_NETWORKS"
_ALLOW_HINT = (
    f"set {ALLOW_PRIVATE_ENV}=1 or defaults.allow_private_networks: true for intranet feeds"
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance credentials live here (AWS/GCP/Azure, AWS over IPv6, Alibaba): never a feed,
# so they stay refused even when private networks are allowed.
_METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10")
)
# NAT64 prefixes embed the IPv4 address they reach; an IPv6-only host with DNS64
# sees every IPv4 site this way, so judge the embedded address.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:  # ::ffff:10.0.0.1 reaches 10.0.0.1
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_kind(ip: IPAddress) -> str | None:
    """Why a fetch must not connect to `ip` ('loopback', 'private', ...); None when public."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return address_kind(embedded)
        ip = ip if ip.scope_id is None else ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    if ip in _METADATA:
        return "cloud metadata"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip in _CGNAT:
        return "shared (CGNAT)"
    if any(ip in net for net in _PRIVATE):
        return "private"
    # documentation, benchmarking, IETF and future-use ranges: not on the Internet
    if ip.is_reserved or ip.is_private or not ip.is_global:
        return "reserved"
    return None


def is_public_address(ip: str | IPAddress) -> bool:
    """True when `ip` is an ordinary Internet address a feed may live at."""
    return address_kind(ipaddress.ip_address(ip) if isinstance(ip, str) else ip) is None


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which addresses a fetch may connect to: public ones, and non-public ones when
    private networks are allowed (intranet feeds) or inside `allowed_networks`."""

    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    def refusal(self, ip: IPAddress) -> str | None:
        """The error a fetch to `ip` fails with; None when it may connect."""
        kind = address_kind(ip)
        if kind is None:
            return None
        if kind == "cloud metadata":
            return f"refused: {ip} is a cloud metadata address, never a feed"
        if self.allow_private or any(ip in net for net in self.allowed_networks):
            return None
        return f"refused: {ip} is a {kind} address ({_ALLOW_HINT})"


def private_networks_allowed_by_env() -> bool:
    return os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy allows.

    Every new connection resolves the host here, refuses it if any address is
    refused, and connects to the checked address itself: no second lookup a
    rebinding DNS server could answer differently. TLS still verifies the
    certificate for the host name (httpcore passes it as SNI), and the Host
    header is untouched: only the socket's address is pinned.
    """

    def __init__(self, policy: AddressPolicy):
        self.policy = policy

    async def resolve(self, host: str, port: int) -> list[str]:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"{host} not found in DNS ({exc.strerror})") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            refusal = self.policy.refusal(ipaddress.ip_address(address))
            if refusal:
                raise FetchError(refusal)
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.resolve(host, port)
        last: Exception | None = None
        for i, address in enumerate(addresses):
            # Not happy eyeballs (it would take the host name and resolve it again): the
            # addresses in turn, each but the last given a few seconds, so a
            # black-holed IPv6 route costs little before IPv4 is tried.
            limit = timeout if i == len(addresses) - 1 else min(timeout or 3.0, 3.0)
            try:
                return await AsyncioStream.connect(address, port, limit, local_address,
                                                   socket_options)  # fmt: skip
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError(f"{host} has no address")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("feeds are never fetched over a unix socket")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection as httpcore sees it, on asyncio's own streams."""

    __slots__ = ("_reader", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(
        cls,
        address: str,
        port: int,
        timeout: float | None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncioStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    address, port, local_addr=(local_address, 0) if local_address else None
                )  # asyncio sets TCP_NODELAY on TCP sockets
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"timed out connecting to {address}") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"{address}: {exc.strerror or exc}") from None
        try:
            for option in socket_options or ():
                writer.get_extra_info("socket").setsockopt(*option)
        except OSError as exc:
            writer.transport.abort()
            raise httpcore.ConnectError(f"{address}: {exc.strerror or exc}") from None
        return cls(reader, writer)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout("timed out reading") from None
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout("timed out writing") from None
        except OSError as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from None

    async def aclose(self) -> None:
        # Without waiting for a TLS peer's close_notify, as httpcore's own streams do.
        self._writer.transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            self._writer.transport.abort()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from None
        except OSError as exc:  # ssl.SSLError (a certificate refused) is one
            self._writer.transport.abort()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from None
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # an idle connection with something to read: the server closed it (or broke
            # the protocol), so the pool must not reuse it
            # (asyncio reads sockets eagerly: what the server sent may wait in the reader)
            reader = self._reader
            return (
                reader.at_eof()
                or reader.exception() is not None
                or bool(getattr(reader, "_buffer", b""))
                or is_socket_readable(self._writer.get_extra_info("socket"))
            )
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info in ("ssl_object", "socket"):
            return self._writer.get_extra_info(info)
        return None
