"""HTTP for feeds: one shared httpx client, bounded in every dimension, conditional.

Like miniflux's fetcher, this module owns the HTTP facts and turns every
failure into one FetchError a user can read ("timed out after 30 s",
"response body too large"). It decides nothing about when to poll.

It connects only to public addresses unless private networks are allowed: the
host is resolved here, every address checked, and the socket opened to the
checked address (see _GuardedBackend), so DNS cannot answer differently between
the check and the connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import ssl
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from monitor.errors import FetchError
from monitor.types import Fetched

MAX_REDIRECTS = 5
# httpx would decode br and zstd in one unbounded chunk, so a small bomb could
# inflate in memory: advertise only what we decompress ourselves, bounded.
ACCEPT_ENCODING = "gzip, deflate"
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_KEPT_HEADERS = ("content-type", "content-language", "content-location")

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


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy allows.

    Every new connection resolves the host here, refuses it if any address is
    refused, and connects to the checked address itself: no second lookup a
    rebinding DNS server could answer differently. TLS still verifies the
    certificate for the host name (httpcore passes it as SNI), and the Host
    header is untouched: only the socket's address is pinned.
    """

    def __init__(self, policy: AddressPolicy):
        self.policy = policy
        self._backend = httpcore.AnyIOBackend()

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
            # Not anyio's happy eyeballs (it takes one host name, which it would resolve
            # again): the addresses in turn, each but the last given a few seconds, so a
            # black-holed IPv6 route costs little before IPv4 is tried.
            limit = timeout if i == len(addresses) - 1 else min(timeout or 3.0, 3.0)
            try:
                return await self._backend.connect_tcp(
                    address, port, timeout=limit, local_address=local_address,
                    socket_options=socket_options,
                )  # fmt: skip
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
        await self._backend.sleep(seconds)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def describe_status(code: int) -> str:
    if code == 404:
        return "resource not found (404 status code)"
    if code in (401, 403):
        return f"access denied ({code} status code): the feed needs a login or blocks us"
    if code == 410:
        return (
            "gone (410 status code): the site removed this feed; "
            "it is disabled until you change its URL"
        )
    if code == 429:
        return "rate limited by the server (429 status code)"
    if code >= 500:
        return f"server error ({code} status code)"
    return f"unexpected HTTP status {code}"


class _BoundedDecoder:
    """Decompresses a response body chunk by chunk and stops at `limit` bytes of output."""

    def __init__(self, encoding: str, limit: int):
        self.limit = limit
        self.out = bytearray()
        self._encoding = encoding
        self._first = True
        if encoding in ("", "identity"):
            self._z = None
        elif encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.decompressobj(zlib.MAX_WBITS)
        else:
            raise FetchError(
                f"unsupported Content-Encoding {encoding!r} (we asked for gzip or deflate)"
            )

    def feed(self, chunk: bytes) -> None:
        if self._z is None:
            self.out += chunk
            self._check()
            return
        if self._z.eof:
            return
        data = chunk
        while data:
            try:
                piece = self._z.decompress(data, self.limit - len(self.out) + 1)
            except zlib.error as exc:
                if self._first and self._encoding == "deflate":
                    # "deflate" is meant to be zlib-wrapped; some servers send raw deflate.
                    self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._first = False
                    continue
                raise FetchError(f"corrupt {self._encoding} body: {exc}") from None
            self._first = False
            self.out += piece
            self._check()
            if self._z.eof:
                return
            data = self._z.unconsumed_tail

    def finish(self) -> bytes:
        if self._z is not None and not self._z.eof and self.out:
            with contextlib.suppress(zlib.error):
                self.out += self._z.flush()
            self._check()
        return bytes(self.out)

    def _check(self) -> None:
        if len(self.out) > self.limit:
            raise FetchError(
                f"response body too large (over {self.limit:,} bytes once decompressed)"
            )


class _PerHostTransport(httpx.AsyncBaseTransport):
    """A small connection pool per host behind the one shared client.

    httpcore scans every pooled connection (a poll() each) for every request, so a
    single pool kept warm for hundreds of hosts costs O(hosts) per request: measured,
    a warm pass over 500 feeds on 50 hosts spent most of its time there.
    """

    def __init__(self, per_host: int, backend: httpcore.AsyncNetworkBackend):
        self._per_host = per_host
        self._backend = backend
        self._tls: ssl.SSLContext | None = None  # loaded on the first https host
        # Plain http never uses one; were it used, it trusts no CA and fails closed.
        self._no_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._pools: dict[tuple[bytes, bytes, int | None], httpx.AsyncHTTPTransport] = {}

    def _ssl_context(self, scheme: bytes) -> ssl.SSLContext:
        if scheme != b"https":
            return self._no_tls
        if self._tls is None:
            self._tls = httpx.create_ssl_context()  # one CA bundle load, not one per host
        return self._tls

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = (request.url.raw_scheme, request.url.raw_host, request.url.port)
        pool = self._pools.get(key)
        if pool is None:
            limits = httpx.Limits(
                max_connections=self._per_host,
                max_keepalive_connections=self._per_host,
                keepalive_expiry=30,
            )
            context = self._ssl_context(key[0])
            pool = self._pools[key] = httpx.AsyncHTTPTransport(verify=context, limits=limits)
            # httpx takes no network backend: give its transport an httpcore pool that has
            # ours, with the same settings. test_ssrf fails if httpx renames _pool.
            pool._pool = httpcore.AsyncConnectionPool(
                ssl_context=context,
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
                network_backend=self._backend,
            )
        return await pool.handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()


class Fetcher:
    """Fetches feeds politely: global and per-host concurrency, a total deadline per fetch."""

    def __init__(
        self,
        *,
        user_agent: str,
        max_body_bytes: int = 10 * 1024 * 1024,
        concurrency: int = 16,
        per_host_concurrency: int = 2,
        connect_timeout: float = 10.0,
        allow_private_networks: bool = False,
        allowed_networks: Iterable[str] = (),
    ):
        """`allow_private_networks` (or REELWATCH_ALLOW_PRIVATE_NETWORKS=1) lets feeds live on
        loopback, RFC 1918 and other non-public addresses; `allowed_networks` (CIDR
        strings) lets just those non-public networks through."""
        self.max_body_bytes = max_body_bytes
        self.policy = AddressPolicy(
            allow_private=allow_private_networks or private_networks_allowed_by_env(),
            allowed_networks=tuple(ipaddress.ip_network(n) for n in allowed_networks),
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._per_host = per_host_concurrency
        self._hosts: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(self._per_host)
        )
        self._connect_timeout = connect_timeout
        self._client = httpx.AsyncClient(
            headers={
                "User-Agent": user_agent,
                "Accept": ACCEPT,
                "Accept-Encoding": ACCEPT_ENCODING,
            },
            follow_redirects=False,  # followed by hand: every hop is checked
            transport=_PerHostTransport(per_host_concurrency, _GuardedBackend(self.policy)),
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        timeout: float = 30.0,
    ) -> Fetched:
        host = urlsplit(url).hostname or ""
        async with self._slots, self._hosts[host]:
            # timed from here: waiting for a slot is not the server's slowness
            started = time.monotonic()
            try:
                return await self._fetch_with_deadline(url, etag, last_modified, timeout, started)
            except FetchError as exc:
                exc.elapsed_ms = int((time.monotonic() - started) * 1000)
                raise

    async def _fetch_with_deadline(
        self, url: str, etag: str | None, last_modified: str | None, timeout: float, started: float
    ) -> Fetched:
        try:
            # A total deadline: a server trickling a byte every few seconds
            # resets httpx's read timeout forever, never this one.
            async with asyncio.timeout(timeout):
                return await self._fetch(url, etag, last_modified, timeout, started)
        except TimeoutError:
            raise FetchError(f"timed out after {timeout:g} s") from None
        except httpx.TimeoutException:
            raise FetchError(f"timed out after {timeout:g} s") from None
        except httpx.ConnectError as exc:
            raise FetchError(f"cannot connect: {exc or type(exc).__name__}") from None
        except httpx.RemoteProtocolError as exc:
            raise FetchError(f"the server broke the HTTP protocol: {exc}") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"HTTP error: {exc or type(exc).__name__}") from None

    async def _fetch(
        self, url: str, etag: str | None, last_modified: str | None, timeout: float, started: float
    ) -> Fetched:
        conditional = {}
        if etag:
            conditional["If-None-Match"] = etag
        if last_modified:
            conditional["If-Modified-Since"] = last_modified
        http_timeout = httpx.Timeout(timeout, connect=min(self._connect_timeout, timeout))
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            if urlsplit(current).scheme not in ("http", "https"):
                raise FetchError(f"refused a redirect to a non-http(s) URL: {current[:200]}")
            request = self._client.build_request(
                "GET", current, headers=conditional, timeout=http_timeout
            )
            response = await self._client.send(request, stream=True)
            try:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location", "").strip()
                    if not location:
                        raise FetchError(f"redirect ({response.status_code}) without a Location")
                    current = urljoin(str(response.url), location)
                    continue
                return await self._finish(response, etag, last_modified, started)
            finally:
                await response.aclose()
        raise FetchError(f"too many redirects (more than {MAX_REDIRECTS})")

    async def _finish(
        self, response: httpx.Response, etag: str | None, last_modified: str | None, started: float
    ) -> Fetched:
        code = response.status_code
        if code == 304:
            # read the (empty) body so httpx can keep the connection for the next feed
            await response.aread()
            return Fetched(
                status=304,
                url=str(response.url),
                body=None,
                headers={},
                etag=response.headers.get("etag") or etag,
                last_modified=response.headers.get("last-modified") or last_modified,
                elapsed_ms=int((time.monotonic() - started) * 1000),
            )
        if not 200 <= code < 300:
            retry_after = None
            if code in (429, 503):
                retry_after = parse_retry_after(
                    response.headers.get("retry-after"), datetime.now(UTC)
                )
            raise FetchError(
                describe_status(code), status=code, retry_after=retry_after, gone=code == 410
            )
        body = await self._read_body(response)
        headers = {k: response.headers[k] for k in _KEPT_HEADERS if k in response.headers}
        headers.setdefault("content-location", str(response.url))
        return Fetched(
            status=code,
            url=str(response.url),
            body=body,
            headers=headers,
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            elapsed_ms=int((time.monotonic() - started) * 1000),
        )

    async def _read_body(self, response: httpx.Response) -> bytes:
        limit = self.max_body_bytes
        length = response.headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > limit:
            raise FetchError(
                f"response body too large (Content-Length {int(length):,} > {limit:,} bytes)"
            )
        encoding = response.headers.get("content-encoding", "").strip().lower()
        decoder = _BoundedDecoder(encoding, limit)
        async for chunk in response.aiter_raw():
            decoder.feed(chunk)
        return decoder.finish()
