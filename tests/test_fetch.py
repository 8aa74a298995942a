"""The fetcher against a real loopback server: bounded, conditional, redirect-safe."""

from __future__ import annotations

import asyncio
import base64
import gzip
import re
import threading
import time
import zlib
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import trustme

from monitor.errors import FetchError
from monitor.fetch import Fetcher, parse_retry_after
from monitor.types import Fetched
from tests.conftest import fixture
from tests.servers import FeedServer, FeedServerAt, TlsFeedServer

BODY = fixture("thr_rescraped_rss2.xml")


def fetch(url: str, *, max_body: int = 1_000_000, timeout: float = 5.0, **kw: str) -> Fetched:
    async def go() -> Fetched:
        fetcher = Fetcher(user_agent="reelwatch-test", max_body_bytes=max_body)
        try:
            return await fetcher.fetch(url, timeout=timeout, **kw)
        finally:
            await fetcher.aclose()

    return asyncio.run(go())


def fails(url: str, message: str, **kw: float) -> FetchError:
    with pytest.raises(FetchError, match=message) as caught:
        fetch(url, **kw)
    return caught.value


@pytest.mark.parametrize(
    "encoding, encoded",
    [
        ("gzip", gzip.compress(BODY)),
        ("deflate", zlib.compress(BODY)),
        ("deflate", zlib.compress(BODY, wbits=-15)),  # raw deflate, as some servers send it
        ("identity", BODY),
    ],
)
def test_compressed_bodies_are_decoded(
    feed_server: FeedServer, encoding: str, encoded: bytes
) -> None:
    url = feed_server.add("/f", encoded, headers={"Content-Encoding": encoding})
    assert fetch(url).body == BODY


def test_https_feeds_are_verified(
    feed_server: FeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    server = TlsFeedServer(ca)
    try:
        url = server.add("/f", BODY)
        # a CA nobody trusts is refused, in words and with the way out
        fails(url, re.escape(
            "the server's TLS certificate was refused: unable to get local issuer certificate "
            "(a feed on an intranet with its own certificate authority: point SSL_CERT_FILE at "
            "that CA's file)"
        ))  # fmt: skip
        # an intranet CA is trusted through SSL_CERT_FILE, as by every httpx client
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        plain = feed_server.add("/plain", BODY)

        async def both() -> list[Fetched]:  # http and https hosts through one fetcher
            fetcher = Fetcher(user_agent="reelwatch-test")
            try:
                return [await fetcher.fetch(u) for u in (plain, url, plain)]
            finally:
                await fetcher.aclose()

        assert [f.body for f in asyncio.run(both())] == [BODY] * 3
    finally:
        server.close()


def test_conditional_get_returns_304_without_body(feed_server: FeedServer) -> None:
    url = feed_server.add("/f", BODY)
    first = fetch(url)
    second = fetch(url, etag=first.etag, last_modified=first.last_modified)
    assert second.status == 304 and second.body is None and second.etag == first.etag


def test_content_length_over_the_limit_is_refused_unread(feed_server: FeedServer) -> None:
    url = feed_server.add("/f", b"x" * 20_000)
    fails(url, r"too large \(Content-Length 20,000", max_body=10_000)


def test_gzip_bomb_is_stopped_at_the_limit(feed_server: FeedServer) -> None:
    bomb = gzip.compress(b"\0" * 50_000_000)  # ~50 KB on the wire
    url = feed_server.add("/f", bomb, headers={"Content-Encoding": "gzip"})
    fails(url, "too large", max_body=1_000_000)


def test_unrequested_encodings_are_refused(feed_server: FeedServer) -> None:
    url = feed_server.add("/f", b"\x1b\x00", headers={"Content-Encoding": "br"})
    fails(url, "unsupported Content-Encoding 'br'")


def _endless(handler) -> None:  # no Content-Length, body never ends
    handler.send_response(200)
    handler.send_header("Content-Type", "application/rss+xml")
    handler.send_header("Connection", "close")
    handler.end_headers()
    try:
        while True:
            handler.wfile.write(b"<item>" * 10_000)
    except OSError:
        pass


def test_endless_body_is_cut_at_the_limit(feed_server: FeedServer) -> None:
    url = feed_server.add("/f", handler=_endless)
    fails(url, "too large", max_body=1_000_000)


def _trickle(handler) -> None:  # a byte every 0.3 s: never trips a read timeout
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    try:
        for _ in range(1000):
            handler.wfile.write(b"<")
            handler.wfile.flush()
            time.sleep(0.3)
    except OSError:
        pass


def test_trickling_server_hits_the_total_deadline(feed_server: FeedServer) -> None:
    url = feed_server.add("/f", handler=_trickle)
    started = time.monotonic()
    fails(url, "timed out after 1.5 s", timeout=1.5)
    assert time.monotonic() - started < 3


def test_redirects_are_followed(feed_server: FeedServer) -> None:
    feed_server.add("/new", BODY)
    url = feed_server.add("/old", status=301, headers={"Location": "/new"}, conditional=False)
    got = fetch(url)
    assert got.body == BODY and got.url.endswith("/new")


def test_redirect_loop_stops(feed_server: FeedServer) -> None:
    feed_server.add("/a", status=302, headers={"Location": "/b"}, conditional=False)
    feed_server.add("/b", status=302, headers={"Location": "/a"}, conditional=False)
    fails(feed_server.url("/a"), "too many redirects")


def test_redirect_to_file_is_refused(feed_server: FeedServer) -> None:
    url = feed_server.add("/f", status=302, headers={"Location": "file:///etc/passwd"},
                          conditional=False)  # fmt: skip
    fails(url, "non-http")


@pytest.mark.parametrize(
    "status, headers, message, retry_after",
    [
        (429, {"Retry-After": "120"}, "rate limited", 120.0),
        (503, {"Retry-After": "30"}, r"server error \(503", 30.0),
        (500, {}, r"server error \(500", None),
        (404, {}, r"not found \(404", None),
        (403, {}, "access denied", None),
    ],
)
def test_error_statuses(
    feed_server: FeedServer, status: int, headers: dict, message: str, retry_after: float | None
) -> None:
    url = feed_server.add("/f", b"no", status=status, headers=headers, conditional=False)
    error = fails(url, message)
    assert error.status == status and error.retry_after == retry_after and not error.gone


def test_410_says_the_feed_is_gone(feed_server: FeedServer) -> None:
    url = feed_server.add("/f", b"", status=410, conditional=False)
    assert fails(url, "gone").gone


def test_connection_refused_is_a_clear_error() -> None:
    fails("http://127.0.0.1:9/feed", "cannot connect")


NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("120", 120.0),
        ("Wed, 25 Nov 2026 12:05:00 GMT", 300.0),
        ("Wed, 25 Nov 2026 11:00:00 GMT", 0.0),  # in the past
        ("soon", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def _reply(handler, status: int, body: bytes = b"", **headers: str) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _answer_then_hang_up(handler) -> None:  # says nothing of closing, then closes
    _reply(handler, 200, BODY, Content_Type="application/rss+xml")
    handler.close_connection = True


def test_a_connection_the_server_closed_while_idle_is_not_reused(
    feed_server: FeedServer,
) -> None:
    url = feed_server.add("/f", handler=_answer_then_hang_up)

    async def three() -> list[Fetched]:
        fetcher = Fetcher(user_agent="reelwatch-test")
        fetched = []
        try:
            for _ in range(3):
                fetched.append(await fetcher.fetch(url))
                await asyncio.sleep(0.2)  # the server's FIN arrives at the idle connection
            return fetched
        finally:
            await fetcher.aclose()

    assert [f.body for f in asyncio.run(three())] == [BODY] * 3
    assert len(feed_server.seen("/f")) == 3


def _needs_login(handler) -> None:
    expected = "Basic " + base64.b64encode(b"reader:s3cret").decode()
    if handler.headers.get("Authorization") != expected:
        _reply(handler, 401, WWW_Authenticate='Basic realm="feeds"')
    else:
        _reply(handler, 200, BODY)


def test_credentials_in_the_url_log_in(feed_server: FeedServer) -> None:
    url = feed_server.add("/private", handler=_needs_login)
    with_login = url.replace("http://", "http://reader:s3cret@")
    assert fetch(with_login).body == BODY
    fails(url, "access denied")  # without them: refused, as the server says


def _cookie_gate(handler) -> None:  # a site that sets a cookie by redirect, then checks it
    if "seen=1" not in handler.headers.get("Cookie", ""):
        _reply(handler, 302, Location="/gated", Set_Cookie="seen=1; Path=/")
    else:
        _reply(handler, 200, BODY)


def test_a_cookie_set_by_a_redirect_is_sent_on_the_next_hop(feed_server: FeedServer) -> None:
    url = feed_server.add("/gated", handler=_cookie_gate)
    assert fetch(url).body == BODY
    assert [r.headers.get("cookie") for r in feed_server.seen("/gated")] == [None, "seen=1"]


def test_a_closed_fetcher_fetches_nothing(feed_server: FeedServer) -> None:
    url = feed_server.add("/f", BODY)

    async def after_close() -> None:
        fetcher = Fetcher(user_agent="reelwatch-test")
        await fetcher.aclose()
        await fetcher.fetch(url)

    with pytest.raises(FetchError, match="closed"):
        asyncio.run(after_close())
    assert feed_server.seen("/f") == []


def _answer_and_babble(handler) -> None:  # then bytes no request asked for, on a live socket
    _reply(handler, 200, BODY)
    handler.wfile.flush()
    time.sleep(0.1)  # the client has read its answer: these arrive at an idle connection
    handler.wfile.write(b"HTTP/1.1 200 OK\r\n")


def test_a_connection_with_unasked_bytes_waiting_is_not_reused(feed_server: FeedServer) -> None:
    url = feed_server.add("/f", handler=_answer_and_babble)

    async def twice() -> list[Fetched]:
        fetcher = Fetcher(user_agent="reelwatch-test")
        try:
            first = await fetcher.fetch(url)
            await asyncio.sleep(0.5)  # the stray bytes arrive while the connection idles
            return [first, await fetcher.fetch(url)]
        finally:
            await fetcher.aclose()

    assert [f.body for f in asyncio.run(twice())] == [BODY] * 2


def fetch_all(urls: list[str], *, kept_pools: int) -> list[Fetched]:
    """One fetcher fetching `urls` one after the other."""

    async def go() -> list[Fetched]:
        fetcher = Fetcher(user_agent="reelwatch-test", kept_pools=kept_pools)
        try:
            return [await fetcher.fetch(u, timeout=5) for u in urls]
        finally:
            await fetcher.aclose()

    return asyncio.run(go())


def test_only_the_most_recently_fetched_hosts_keep_their_connections(
    feed_server: FeedServer,
) -> None:
    """A connection is kept alive for the host's next fetch, but not by every host ever
    fetched: 10,000 feed hosts would hold 10,000 sockets and pools."""
    a = feed_server.add("/a", BODY)
    second, third = FeedServerAt("127.0.0.2"), FeedServerAt("127.0.0.3")
    try:
        b, c = second.add("/b", BODY), third.add("/c", BODY)
        assert all(f.body == BODY for f in fetch_all([a, b, a], kept_pools=2))
        first, again = feed_server.seen("/a")
        assert first.client_port == again.client_port  # the same connection, kept alive
        feed_server.requests.clear()
        assert all(f.body == BODY for f in fetch_all([a, b, c, a], kept_pools=2))
        first, again = feed_server.seen("/a")
        assert first.client_port != again.client_port  # a's was closed to keep c's
    finally:
        second.close()
        third.close()


def test_a_host_being_fetched_keeps_its_connection(feed_server: FeedServer) -> None:
    """Closing the least recently used hosts' connections never cuts a fetch short: a
    slow host answers while three others are fetched, with room kept for one host."""
    asked = threading.Event()

    def slow(handler: BaseHTTPRequestHandler) -> None:
        asked.set()
        time.sleep(0.5)  # the other hosts are fetched meanwhile
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(BODY)))
        handler.end_headers()
        handler.wfile.write(BODY)

    a = feed_server.add("/slow", handler=slow)
    others = [FeedServerAt(f"127.0.0.{n}") for n in (2, 3, 4)]

    async def go() -> tuple[Fetched, list[Fetched]]:
        fetcher = Fetcher(user_agent="reelwatch-test", kept_pools=1)
        try:
            slow_fetch = asyncio.create_task(fetcher.fetch(a, timeout=5))
            assert await asyncio.to_thread(asked.wait, 5)
            fetched = [await fetcher.fetch(s.add("/f", BODY), timeout=5) for s in others]
            return await slow_fetch, fetched
        finally:
            await fetcher.aclose()

    try:
        slow_one, fetched = asyncio.run(go())
        assert slow_one.body == BODY and [f.body for f in fetched] == [BODY] * 3
    finally:
        for s in others:
            s.close()


def test_a_host_turn_is_good_for_one_fetch_once_taken(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed", BODY)

    async def go() -> None:
        fetcher = Fetcher(user_agent="reelwatch-test")
        try:
            turn = fetcher.turn(url)
            with pytest.raises(RuntimeError, match="taken"):
                await fetcher.fetch(url, turn=turn)  # not waited for: no slot held
            async with turn:
                assert (await fetcher.fetch(url, turn=turn)).body == BODY
                with pytest.raises(RuntimeError, match="one fetch"):
                    await fetcher.fetch(url, turn=turn)  # its slot went back with the fetch
        finally:
            await fetcher.aclose()

    asyncio.run(go())
    assert len(feed_server.seen("/feed")) == 1
