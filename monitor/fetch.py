"""HTTP for feeds: one shared httpx client, bounded in every dimension, conditional.

Like miniflux's fetcher, this module owns the HTTP facts and turns every
failure into one FetchError a user can read ("timed out after 30 s",
"response body too large"). It decides nothing about when to poll.

It connects only to public addresses unless private networks are allowed, through
monitor.network, which resolves, checks and connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import ssl
import time
import zlib
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from monitor.errors import FetchError
from monitor.network import AddressPolicy, GuardedBackend, private_networks_allowed_by_env
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


def _certificate_refused(exc: BaseException) -> str | None:
    """What was wrong with the server's certificate, in words (not OpenSSL's
    "[SSL: CERTIFICATE_VERIFY_FAILED] ... (_ssl.c:1006)"); None if that was not it."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = cause.verify_message or cause.reason or "not verified"
            return (
                f"the server's TLS certificate was refused: {why} (a feed on an intranet "
                "with its own certificate authority: point SSL_CERT_FILE at that CA's file)"
            )
        cause = cause.__cause__ or cause.__context__
    return None


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


_Origin = tuple[bytes, bytes, int | None]  # scheme, host, port


class _PerHostTransport(httpx.AsyncBaseTransport):
    """A small connection pool per host behind the one shared client.

    httpcore scans every pooled connection (a poll() each) for every request, so a
    single pool kept warm for hundreds of hosts costs O(hosts) per request: measured,
    a warm pass over 500 feeds on 50 hosts spent most of its time there.
    Only the `keep` most recently used hosts keep their pool: a feed's host is seldom
    asked again before its keep-alive ends, and a pool held for each of 10,000 hosts
    costs ~24 MB and, until it is used again, an open socket each (past a systemd
    service's 1,024 open files). A pool still in use is never closed.
    """

    def __init__(self, per_host: int, backend: httpcore.AsyncNetworkBackend, keep: int = 64):
        self._per_host = per_host
        self._backend = backend
        self._keep = keep
        self._tls: ssl.SSLContext | None = None  # loaded on the first https host
        # Plain http never uses one; were it used, it trusts no CA and fails closed.
        self._no_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # the least recently used first; each pool beside the httpcore pool inside it
        self._pools: dict[_Origin, tuple[httpx.AsyncHTTPTransport, httpcore.AsyncConnectionPool]]
        self._pools = {}
        self._waiting: Counter[_Origin] = Counter()  # requests not given a response yet

    def _ssl_context(self, scheme: bytes) -> ssl.SSLContext:
        if scheme != b"https":
            return self._no_tls
        if self._tls is None:
            self._tls = httpx.create_ssl_context()  # one CA bundle load, not one per host
        return self._tls

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = (request.url.raw_scheme, request.url.raw_host, request.url.port)
        pool = self._pools.pop(key, None)
        closing = []
        if pool is None:
            closing = self._take_unused()
            pool = self._new_pool(key[0])
        self._pools[key] = pool  # the most recently used last, before any await
        self._waiting[key] += 1
        try:
            for transport in closing:
                await transport.aclose()
            return await pool[0].handle_async_request(request)
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]

    def _new_pool(
        self, scheme: bytes
    ) -> tuple[httpx.AsyncHTTPTransport, httpcore.AsyncConnectionPool]:
        limits = httpx.Limits(
            max_connections=self._per_host,
            max_keepalive_connections=self._per_host,
            keepalive_expiry=30,
        )
        context = self._ssl_context(scheme)
        transport = httpx.AsyncHTTPTransport(verify=context, limits=limits)
        # httpx takes no network backend: give its transport an httpcore pool that has
        # ours, with the same settings. test_ssrf fails if httpx renames _pool.
        transport._pool = core = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self._backend,
        )
        return transport, core

    def _take_unused(self) -> list[httpx.AsyncHTTPTransport]:
        """Make room for one more pool: take out the least recently used beyond `keep`
        that nothing uses (no request waiting, each connection idle or closed; a
        response being read keeps its connection active), for the caller to close."""
        over = len(self._pools) + 1 - self._keep
        if over <= 0:
            return []
        unused = [
            key
            for key in itertools.islice(self._pools, over)
            if key not in self._waiting
            and all(c.is_idle() or c.is_closed() for c in self._pools[key][1].connections)
        ]
        return [self._pools.pop(key)[0] for key in unused]

    async def aclose(self) -> None:
        for transport, _ in self._pools.values():
            await transport.aclose()


class _Host:
    """A host's fetch slots, and how many turns hold or wait for one."""

    __slots__ = ("slots", "users")

    def __init__(self, per_host: int):
        self.slots = asyncio.Semaphore(per_host)
        self.users = 0


class HostTurn:
    """One of a host's fetch slots (`per_host_concurrency`), for `async with`: a caller that
    must hold something else for the fetch (a slot between fetch and store) waits for its
    turn first, so a busy host's queue holds nothing another host's feed could use. The
    fetch given the turn gives the slot back as soon as it is done."""

    __slots__ = ("_fetcher", "_gate", "_held", "_name")

    def __init__(self, fetcher: Fetcher, name: str, gate: _Host):
        self._fetcher, self._name, self._gate = fetcher, name, gate
        self._held = False

    async def __aenter__(self) -> HostTurn:
        self._gate.users += 1
        try:
            await self._gate.slots.acquire()
        except BaseException:
            self._leave()
            raise
        self._held = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        self._leave()

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        if self._held:
            self._held = False
            self._gate.slots.release()

    def _leave(self) -> None:
        self._gate.users -= 1
        if not self._gate.users:  # one per host ever polled would only grow
            del self._fetcher._hosts[self._name]


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
        kept_pools: int | None = None,
    ):
        """`allow_private_networks` (or REELWATCH_ALLOW_PRIVATE_NETWORKS=1) lets feeds live on
        loopback, RFC 1918 and other non-public addresses; `allowed_networks` (CIDR
        strings) lets just those non-public networks through. `kept_pools`: how many of
        the most recently fetched hosts keep their connections (4 x concurrency, 64 at
        least)."""
        self.max_body_bytes = max_body_bytes
        self.policy = AddressPolicy(
            allow_private=allow_private_networks or private_networks_allowed_by_env(),
            allowed_networks=tuple(ipaddress.ip_network(n) for n in allowed_networks),
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._per_host = per_host_concurrency
        self._hosts: dict[str, _Host] = {}  # kept while a turn holds or waits for a slot
        self._connect_timeout = connect_timeout
        self._transport = _PerHostTransport(
            per_host_concurrency,
            GuardedBackend(self.policy),
            keep=kept_pools or max(64, 4 * concurrency),
        )
        self._client = httpx.AsyncClient(
            headers={
                "User-Agent": user_agent,
                "Accept": ACCEPT,
                "Accept-Encoding": ACCEPT_ENCODING,
            },
            follow_redirects=False,  # followed by hand: every hop is checked
            transport=self._transport,
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
        turn: HostTurn | None = None,
    ) -> Fetched:
        """The feed at `url`, conditionally. `turn`: a turn at its host the caller took
        (else the fetch waits for one)."""
        if turn is None:
            async with self.turn(url) as turn:
                return await self.fetch(
                    url, etag=etag, last_modified=last_modified, timeout=timeout, turn=turn
                )
        if not turn.held:
            raise RuntimeError("a host turn is good for one fetch, taken (async with) first")
        try:
            # the host's slot first: a fetch waiting for a busy host holds no slot another
            # host's feed could use (a run of feeds from one outlet would serialise all)
            async with self._slots:
                # timed from here: waiting for a slot is not the server's slowness
                started = time.monotonic()
                try:
                    return await self._fetch_with_deadline(
                        url, etag, last_modified, timeout, started
                    )
                except FetchError as exc:
                    exc.elapsed_ms = int((time.monotonic() - started) * 1000)
                    raise
        finally:
            turn.release()

    def turn(self, url: str) -> HostTurn:
        """A turn at `url`'s host (see HostTurn), to pass to `fetch`."""
        host = urlsplit(url).hostname or ""
        if host not in self._hosts:
            self._hosts[host] = _Host(self._per_host)
        return HostTurn(self, host, self._hosts[host])

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
            tls = _certificate_refused(exc)
            raise FetchError(tls or f"cannot connect: {exc or type(exc).__name__}") from None
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
        cookies: httpx.Cookies | None = None  # set by a redirect, for the hops after it
        for _hop in range(MAX_REDIRECTS + 1):
            if urlsplit(current).scheme not in ("http", "https"):
                raise FetchError(f"refused a redirect to a non-http(s) URL: {current[:200]}")
            if self._client.is_closed:
                raise FetchError("the fetcher is closed (the service is stopping)")
            request = self._client.build_request(
                "GET", current, headers=conditional, cookies=cookies, timeout=http_timeout
            )
            if request.url.username or request.url.password:  # https://user:pw@host/feed
                auth = httpx.BasicAuth(request.url.username, request.url.password)
                request = next(auth.auth_flow(request))  # sets Authorization, this hop only
            # Straight to the transport: the client's send adds a cookie jar shared by
            # every feed, auth and redirect machinery (redirects are followed here, hop
            # by hop) and a log line per request, a sixth of a 304's cost (measured).
            response = await self._transport.handle_async_request(request)
            response.request = request
            try:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location", "").strip()
                    if not location:
                        raise FetchError(f"redirect ({response.status_code}) without a Location")
                    current = urljoin(str(response.url), location)
                    if "set-cookie" in response.headers:  # a site checking cookies by redirect
                        cookies = cookies or httpx.Cookies()
                        cookies.extract_cookies(response)
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
