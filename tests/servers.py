"""Real servers on 127.0.0.1 for the tests: a feed server and a Slack Web API server."""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

LAST_MODIFIED = "Mon, 23 Nov 2026 08:00:00 GMT"


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/rss+xml; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    conditional: bool = True  # send ETag/Last-Modified and honour them with 304
    # full control: called with the request handler instead of the above
    handler: Callable[[BaseHTTPRequestHandler], None] | None = None


@dataclass(frozen=True)
class Seen:
    path: str
    headers: dict[str, str]
    client_port: int = 0  # the connection it came on: a kept-alive one repeats its port


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up on hostile responses is what the tests expect


def _start(
    handler_cls: type[BaseHTTPRequestHandler], owner: Any, host: str = "127.0.0.1",
    tls: ssl.SSLContext | None = None,
) -> _Server:  # fmt: skip
    server = _Server((host, 0), handler_cls)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.owner = owner  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


class _FeedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        owner: FeedServer = self.server.owner  # type: ignore[attr-defined]
        headers = {k.lower(): v for k, v in self.headers.items()}
        owner.requests.append(Seen(self.path, headers, self.client_address[1]))
        route = owner.routes.get(self.path)
        if route is None:
            self._send(404, b"not found", "text/plain")
            return
        if route.handler is not None:
            route.handler(self)
            return
        extra = dict(route.headers)
        if route.conditional and route.status == 200:
            etag = '"' + hashlib.sha1(route.body).hexdigest()[:16] + '"'
            extra.update({"ETag": etag, "Last-Modified": LAST_MODIFIED})
            if self.headers.get("If-None-Match") == etag:
                self._send(304, b"", None, extra)
                return
        self._send(route.status, route.body, route.content_type, extra)

    def _send(
        self, status: int, body: bytes, ctype: str | None, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 304:
            self.wfile.write(body)


class FeedServer:
    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Seen] = []
        self._server = _start(_FeedHandler, self, host, tls)
        scheme = "https" if tls else "http"
        self.base = f"{scheme}://{host}:{self._server.server_address[1]}"

    def add(self, path: str, body: bytes = b"", **kw: Any) -> str:
        self.routes[path] = Route(body=body, **kw)
        return self.base + path

    def url(self, path: str) -> str:
        return self.base + path

    def seen(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass(frozen=True)
class SlackCall:
    path: str
    headers: dict[str, str]
    payload: dict[str, Any]


class _SlackHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        owner: SlackServer = self.server.owner  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            payload = json.loads(raw or b"{}")
        else:
            payload = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        call = SlackCall(self.path, {k.lower(): v for k, v in self.headers.items()}, payload)
        with owner.lock:
            owner.attempts.append(call)
            forced = owner.failures.pop(0) if owner.failures else None
        if forced == "reset":  # hang up without an answer, after reading the request
            self.close_connection = True
            self.connection.shutdown(2)
            return
        time.sleep(owner.delay)
        if forced is not None:
            status, body, headers = forced
            self._send(status, body, headers)
            return
        if self.path.startswith("/services/"):
            with owner.lock:
                owner.calls.append(call)
            self._send(200, b"ok", {"Content-Type": "text/plain"})
            return
        if self.path == "/api/chat.postMessage":
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if token != owner.token:
                self._json({"ok": False, "error": "invalid_auth"})
                return
            channel = payload.get("channel")
            if channel in owner.outside:
                self._json({"ok": False, "error": "not_in_channel"})
                return
            if channel not in owner.channels:
                self._json({"ok": False, "error": "channel_not_found"})
                return
            with owner.lock:
                owner.calls.append(call)
                ts = f"{time.time():.6f}"
                while ts in owner.posted:
                    ts = f"{float(ts) + 0.000001:.6f}"
                owner.posted[ts] = owner.channel_id(channel)
            self._json(
                {"ok": True, "channel": owner.channel_id(channel), "ts": ts,
                 "message": {"text": payload.get("text")}}
            )  # fmt: skip
            return
        if self.path == "/api/chat.update":
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if token != owner.token:
                self._json({"ok": False, "error": "invalid_auth"})
                return
            ts, channel = payload.get("ts"), payload.get("channel")
            if owner.posted.get(ts) != channel:  # chat.update wants the channel's id
                self._json({"ok": False, "error": "message_not_found"})
                return
            with owner.lock:
                owner.updates.append(call)
            self._json({"ok": True, "channel": channel, "ts": ts})
            return
        self._json({"ok": False, "error": "unknown_method"}, 404)

    def _json(self, data: dict[str, Any], status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class SlackServer:
    """Speaks enough of the Slack Web API (chat.postMessage with threads, chat.update) and
    incoming webhooks."""

    token = "xoxb-test-token"

    def __init__(self, channels: tuple[str, ...] = ("#ai-news", "#policy")) -> None:
        self.channels = set(channels)
        self.outside = {"#private"}  # exists, but the bot was not invited
        self.calls: list[SlackCall] = []  # accepted messages
        self.updates: list[SlackCall] = []  # accepted chat.update calls
        self.posted: dict[str, str] = {}  # ts -> channel id of every accepted message
        self.attempts: list[SlackCall] = []  # every request, accepted or not
        self.failures: list = []  # answers to force, in order: (status, body, headers) or "reset"
        self.delay = 0.0  # seconds before each answer
        self.lock = threading.Lock()
        self._server = _start(_SlackHandler, self)
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.api_url = self.base + "/api/"
        self.webhook_url = self.base + "/services/T000/B000/XXXX"

    def channel_id(self, name: str) -> str:
        return "C" + format(abs(hash(name)) % 10**8, "08d")

    def fail_next(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.failures.append((status, body, headers or {"Content-Type": "text/html"}))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- hostile servers: behaviours a feed host may have, for tests/test_hostile.py ------------


class FeedServerAt(FeedServer):
    """A FeedServer on another loopback address (127.0.0.2 by default): a second host,
    e.g. the target of a redirect that the fetcher must refuse."""

    def __init__(self, host: str = "127.0.0.2") -> None:
        super().__init__(host)


class TlsFeedServer(FeedServer):
    """A FeedServer speaking https, its certificate for 127.0.0.1 issued by `ca`
    (a trustme CA), which nothing trusts unless told to."""

    def __init__(self, ca: Any) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        super().__init__(tls=context)


Handler = Callable[[BaseHTTPRequestHandler], None]


def endless_chunked(handler: BaseHTTPRequestHandler) -> None:
    """A chunked body that never ends."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/rss+xml")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    chunk = b"<item>" * 10_000
    try:
        while True:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except OSError:
        pass


def lying_length(length: int) -> Handler:
    """Announces a `length`-byte body and sends a few bytes of it."""

    def send(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/rss+xml")
        handler.send_header("Content-Length", str(length))
        handler.end_headers()
        handler.wfile.write(b"<rss>")

    return send


def trickle(every: float, total: int = 1000) -> Handler:
    """A body one byte every `every` seconds: no read timeout ever trips."""

    def send(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/rss+xml")
        handler.send_header("Content-Length", str(total))
        handler.end_headers()
        try:
            for _ in range(total):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(every)
        except OSError:
            pass

    return send


def slow_headers(every: float) -> Handler:
    """The status line, then the headers one byte every `every` seconds."""

    def send(handler: BaseHTTPRequestHandler) -> None:
        head = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 1000 + b"\r\n\r\n"
        try:
            handler.wfile.write(head[:17])
            handler.wfile.flush()
            for byte in head[17:]:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(every)
        except OSError:
            pass
        handler.close_connection = True

    return send


def answer(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    """A plain 200 with `body`, a feed."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/rss+xml")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def late(body: bytes, seconds: float) -> Handler:
    """`body`, answered `seconds` after the request."""

    def send(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        answer(handler, body)

    return send


def silent(seconds: float = 30.0) -> Handler:
    """Reads the request and answers nothing for `seconds`, then hangs up."""

    def send(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        handler.close_connection = True

    return send


def changing_guids(items: list[tuple[str, str]]) -> Handler:
    """An RSS feed of (title, link) whose guids change on every request, without ETag."""
    served = [0]
    lock = threading.Lock()

    def send(handler: BaseHTTPRequestHandler) -> None:
        with lock:
            served[0] += 1
            n = served[0]
        entries = "".join(
            f"<item><guid>urn:uuid:{n}-{i}</guid><title>{title}</title><link>{link}</link></item>"
            for i, (title, link) in enumerate(items)
        )
        body = (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>C</title>'
            f"{entries}</channel></rss>"
        ).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/rss+xml; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return send
