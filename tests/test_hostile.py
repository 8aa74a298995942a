"""Hostile and broken feeds, end to end: one `reelwatch poll` over all of them at once.

Each hostile feed must end as a per-feed error or warning while the healthy feeds
of the same poll are stored; no feed may read a local file, reach another server,
or make the process large. The pieces are unit-tested in test_fetch and
test_parse; this is the table of what a poll survives.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from monitor.cli import main
from monitor.errors import ParseError
from monitor.normalize import clean_text
from monitor.parse import MAX_ITEMS, refuse_dangerous_markup, repair_utf8
from storage import Repository, make_engine
from storage.repo import StoredItem
from tests.conftest import fixture, write_config
from tests.servers import (
    FeedServer,
    changing_guids,
    endless_chunked,
    lying_length,
    silent,
    slow_headers,
    trickle,
)

THR = "thr_rescraped_rss2.xml"  # 9 items
ARS = "arstechnica_2024-04-01_rss2.xml"  # 20 items
OTHER = "http://OTHER"  # replaced by the base URL of a server no feed may reach
PASSWD = Path("/etc/passwd").read_text().splitlines()[0]  # e.g. root:x:0:0:root:/root:/bin/bash
PEAK_RSS_LIMIT_MB = 300


def rss(items: str, *, prolog: str = "", channel: str = "", encoding: str = "utf-8") -> str:
    return (
        f'<?xml version="1.0" encoding="{encoding}"?>{prolog}<rss version="2.0"><channel>'
        f"<title>T</title>{channel}{items}</channel></rss>"
    )


def item(guid: str = "", title: str = "", link: str = "", date: str = "", extra: str = "") -> str:
    return (
        "<item>"
        + (f"<guid>{guid}</guid>" if guid else "")
        + (f"<title>{title}</title>" if title else "")
        + (f"<link>{link}</link>" if link else "")
        + (f"<pubDate>{date}</pubDate>" if date else "")
        + extra
        + "</item>"
    )


ONE = item("g1", "Caffè è già pronto", "https://example.org/1")
LOLS = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
# relevant to the AI topic: alerted on the first poll, so a second alert would show
CHANGING = [
    ("Sora makes generative AI film trailers", "https://example.org/story/0"),
    ("Studio sues over artificial intelligence dubbing", "https://example.org/story/1"),
]


@dataclass(frozen=True)
class Case:
    name: str
    route: dict[str, Any]  # FeedServer.add keywords
    error: str | None = None  # a failed poll whose error says this, storing nothing
    items: int | None = None  # else: an ok poll that stored this many items
    check: Callable[[list[StoredItem]], None] | None = None
    warning: str | None = None


def _xml(text: str, **kw: Any) -> dict[str, Any]:
    return {"body": text.encode(kw.pop("encoding", "utf-8")), **kw}


def _titles_are(*titles: str) -> Callable[[list[StoredItem]], None]:
    def check(stored: list[StoredItem]) -> None:
        assert sorted(s.item.title for s in stored) == sorted(titles)

    return check


def _no_nul(stored: list[StoredItem]) -> None:
    for s in stored:
        i = s.item
        for value in (i.identity, i.guid, i.url, i.title, i.summary, i.author):
            assert "\x00" not in (value or "")


def _first_seen_dates(stored: list[StoredItem]) -> None:
    assert all(s.item.published == s.first_seen for s in stored)


def _short_title(stored: list[StoredItem]) -> None:
    (s,) = stored
    assert 100 < len(s.item.title) <= 500 and s.item.title.endswith("…")


CASES = [
    # entity expansion and external entities: refused before any XML parser sees them
    Case(
        "billion-laughs",
        _xml(
            rss(
                "",
                prolog=f'<!DOCTYPE rss [<!ENTITY lol0 "lol">{LOLS}]>',
                channel="<description>&lol9;</description>",
            )
        ),
        error="declares XML entities",
    ),
    Case(
        "quadratic-blowup",
        _xml(
            rss(item("q", "&a;" * 50_000), prolog=f'<!DOCTYPE rss [<!ENTITY a "{"a" * 50_000}">]>')
        ),
        error="declares XML entities",
    ),
    Case(
        "quadratic-behind-comment",  # 300 KB of comment once hid the DOCTYPE from the check
        _xml(
            rss(
                item("q", "&a;" * 50_000),
                prolog=f'<!--{"x" * 300_000}--><!DOCTYPE rss [<!ENTITY a "{"a" * 50_000}">]>',
            )
        ),
        error="declares XML entities",
    ),
    Case(
        "xxe-file",
        _xml(
            rss(item("x", "&x;"), prolog='<!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]>')
        ),
        error="declares XML entities",
    ),
    Case(
        "xxe-http",
        _xml(rss(item("x", "&x;"), prolog=f'<!DOCTYPE rss [<!ENTITY x SYSTEM "{OTHER}/xxe">]>')),
        error="declares XML entities",
    ),
    Case(
        "parameter-entities",
        _xml(rss(ONE, prolog=f'<!DOCTYPE rss [<!ENTITY % p SYSTEM "{OTHER}/pe.dtd"> %p;]>')),
        error="declares XML entities",
    ),
    # external DTD and XInclude are never fetched: the feed is read without them
    Case(
        "external-dtd",
        _xml(
            rss(item("d", "before &ext; after"), prolog=f'<!DOCTYPE rss SYSTEM "{OTHER}/ext.dtd">')
        ),
        items=1,
    ),
    Case(
        "xinclude",
        _xml(
            rss(
                item(
                    "i",
                    "XInclude",
                    extra=(
                        '<description xmlns:xi="http://www.w3.org/2001/XInclude">'
                        f'<xi:include href="{OTHER}/xi" parse="text"/>'
                        '<xi:include href="file:///etc/passwd" parse="text"/></description>'
                    ),
                )
            )
        ),
        items=1,
    ),
    # bodies that grow without end, or claim to
    Case(
        "gzip-bomb",
        {"body": gzip.compress(b" " * 64 * 1024 * 1024), "headers": {"Content-Encoding": "gzip"}},
        error="too large",
    ),
    Case(
        "deflate-bomb",
        {
            "body": zlib.compress(b" " * 64 * 1024 * 1024),
            "headers": {"Content-Encoding": "deflate"},
        },
        error="too large",
    ),
    # we never ask for br (httpx would inflate it in one piece): a br body is refused
    Case(
        "brotli",
        {"body": b"\x1b\xff\xff\x0f", "headers": {"Content-Encoding": "br"}},
        error="unsupported Content-Encoding 'br'",
    ),
    Case("endless-chunked", {"handler": endless_chunked}, error="too large"),
    Case(
        "huge-content-length",
        {"handler": lying_length(50 * 1024**3)},
        error="too large (Content-Length",
    ),
    # servers too slow to wait for: the total deadline ends each
    Case("trickle", {"handler": trickle(every=0.7)}, error="timed out after 2 s"),
    Case("slow-headers", {"handler": slow_headers(every=0.5)}, error="timed out after 2 s"),
    Case("silent", {"handler": silent(10)}, error="timed out after 2 s"),
    # redirects
    Case(
        "redirect-loop",
        {"status": 302, "headers": {"Location": "/redirect-loop"}, "conditional": False},
        error="too many redirects",
    ),
    Case(
        "redirect-to-file",
        {"status": 301, "headers": {"Location": "file:///etc/passwd"}, "conditional": False},
        error="non-http(s)",
    ),
    # encodings: what can be read is read, and says what was wrong
    Case(
        "invalid-utf8",  # one stray byte must not garble the feed's accented letters
        {"body": rss(ONE).encode().replace(b"pronto", b"pr\xffnto")},
        items=1,
        check=_titles_are("Caffè è già pr\ufffdnto"),
    ),
    Case(
        "lying-charset",  # Latin-1 served as UTF-8
        {
            "body": rss(ONE, encoding="iso-8859-1").encode("latin-1"),
            "content_type": "application/rss+xml; charset=utf-8",
        },
        items=1,
        check=_titles_are("Caffè è già pronto"),
        warning="declared as utf-8",
    ),
    Case(
        "utf-16",
        _xml(rss(ONE, encoding="utf-16"), encoding="utf-16"),
        items=1,
        check=_titles_are("Caffè è già pronto"),
    ),
    Case(
        "nul-bytes",
        _xml(
            rss(
                item("g\x001", "ti\x00tle", "https://example.org/a\x00b")
                + item("g2", "second", "https://example.org/c")
            )
        ),
        items=2,
        check=_no_nul,
    ),
    Case(
        "bidi-override",
        _xml(rss(item("b", "Invoice \u202egnp.exe", "https://example.org/b"))),
        items=1,
        check=_titles_are("Invoice gnp.exe"),
    ),
    # not feeds at all
    Case(
        "html-page",
        {"body": b"<!DOCTYPE html><html><body>Home</body></html>", "content_type": "text/html"},
        error="HTML page",
    ),
    Case(
        "json",
        {
            "body": b'{"version": "https://jsonfeed.org/version/1.1", "items": []}',
            "content_type": "application/json",
        },
        error="not an RSS or Atom feed",
    ),
    Case(
        "binary",
        {"body": bytes(range(256)) * 64, "content_type": "image/png"},
        error="not an RSS or Atom feed",
    ),
    Case("empty", {"body": b""}, error="empty response body"),
    # feeds that are too much of a good thing
    Case(
        "10000-items",
        _xml(
            rss(
                "".join(
                    item(f"g{i}", f"Film news {i}", f"https://example.org/n/{i}")
                    for i in range(10_000)
                )
            )
        ),
        items=MAX_ITEMS,
    ),
    Case(  # 30,000 empty items in 900 KB: a parse worker's seconds on every poll, refused
        "30000-empty-items",
        _xml(rss("<item><title>a</title></item>" * 30_000)),
        error="refused: 30,000 items in one document",
    ),
    Case("5mb-title", _xml(rss(item("big", "word " * 1_000_000))), items=1, check=_short_title),
    Case(
        "50000-deep",
        _xml(rss(item("deep", "Deep", extra="<x>" * 50_000 + "</x>" * 50_000))),
        items=1,
        check=_titles_are("Deep"),
    ),
    # items that say too little, or the same thing twice
    Case(
        "missing-fields",
        _xml(
            rss(
                item(title="no guid", link="https://example.org/m1")
                + item(guid="m2", title="no link")
                + item(
                    guid="m3",
                    link="https://example.org/m3",
                    extra="<description>no title, only words</description>",
                )
                + item(guid="m4", title="no date", link="https://example.org/m4")
                + item()
            )
        ),
        items=4,
        check=_titles_are("no guid", "no link", "no title, only words", "no date"),
    ),
    Case(
        "duplicate-guids",
        _xml(rss(item("same", "first") + item("same", "second") + item("same", "third"))),
        items=1,
        check=_titles_are("first"),
    ),
    Case("changing-guids", {"handler": changing_guids(CHANGING)}, items=len(CHANGING)),
    Case(
        "absurd-dates",
        _xml(
            rss(
                item("old", "Old", date="Mon, 01 Jan 1900 00:00:00 GMT")
                + item("future", "Future", date="Fri, 31 Dec 9999 23:59:59 GMT")
            )
        ),
        items=2,
        check=_first_seen_dates,
    ),
    # statuses that say when to come back, or never
    Case(
        "rate-limited",
        {
            "status": 429,
            "body": b"slow down",
            "conditional": False,
            "headers": {"Retry-After": "7200"},
        },
        error="rate limited",
    ),
    Case(
        "unavailable",
        {
            "status": 503,
            "body": b"later",
            "conditional": False,
            "headers": {"Retry-After": "IN-3-HOURS"},
        },
        error="server error (503",
    ),
    Case("gone", {"status": 410, "body": b"", "conditional": False}, error="gone (410"),
]

# `python -c` wrapper: runs a command and prints the whole service's peak memory: the
# command's and every process it starts (storage, the parse workers), summed as PSS (a
# page several processes share, such as the forkserver's preloaded modules, counts
# once in all), sampled every 50 ms. As a child subreaper it inherits the orphaned
# parse workers and forkserver, and reaps them.
_MEASURE = """
import ctypes, os, subprocess, sys, time
from pathlib import Path
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
me = os.getpid()
def pss_kb(pid):
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
def tree_kb():
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    def ours(pid):
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == me:
                return True
        return False
    return sum(pss_kb(pid) for pid in parent if ours(pid))
proc = subprocess.Popen(sys.argv[1:])
peak = 0
while proc.poll() is None:
    peak = max(peak, tree_kb())
    time.sleep(0.05)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
print(f"exit={proc.returncode} maxrss_kb={peak}")
"""


@dataclass
class HostilePoll:
    config: Path
    database_url: str
    feeds: FeedServer
    other: FeedServer
    started: datetime
    exit_code: int
    peak_rss_mb: float
    output: str

    def repo(self) -> Repository:
        return Repository(make_engine(self.database_url))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostilePoll]:
    """One `reelwatch poll` subprocess over every hostile feed and two healthy ones."""
    tmp = tmp_path_factory.mktemp("hostile")
    feeds, other = FeedServer(), FeedServer()
    urls = {"thr": feeds.add("/thr.xml", fixture(THR))}
    retry_at = format_datetime(datetime.now(UTC) + timedelta(hours=3), usegmt=True)
    for case in CASES:
        route = dict(case.route)
        if "body" in route:
            route["body"] = route["body"].replace(OTHER.encode(), other.base.encode())
        headers = route.get("headers", {})
        if headers.get("Retry-After") == "IN-3-HOURS":
            route["headers"] = {**headers, "Retry-After": retry_at}
        urls[case.name] = feeds.add(f"/{case.name}", **route)
    urls["ars"] = feeds.add("/ars.xml", fixture(ARS))
    config = write_config(tmp, urls, timeout="2s", concurrency="64", per_host_concurrency="16")
    database_url = f"sqlite:///{tmp}/reelwatch.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELWATCH_")}
    env |= {"REELWATCH_DATABASE_URL": database_url, "REELWATCH_ALLOW_PRIVATE_NETWORKS": "1"}
    started = datetime.now(UTC)
    command = [sys.executable, "-m", "monitor", "poll", "--config", str(config)]
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    last = done.stdout.strip().splitlines()[-1]
    code, kb = (int(part.split("=")[1]) for part in last.split())
    yield HostilePoll(
        config, database_url, feeds, other, started, code, kb / 1024,
        done.stdout + done.stderr[-5000:],
    )  # fmt: skip
    feeds.close()
    other.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_feed_ends_as_its_own_error_or_warning(hostile: HostilePoll, case: Case) -> None:
    state = hostile.repo().feed_state(case.name)
    assert state is not None, hostile.output
    stored = hostile.repo().list_items(feed=case.name, limit=None)
    if case.error is not None:
        assert state.last_status in ("failed", "gone"), (state, hostile.output)
        assert case.error in (state.last_error or ""), state.last_error
        assert stored == []
    else:
        assert state.last_status == "ok", (state.last_error, hostile.output)
        assert len(stored) == case.items
        if case.warning:
            assert case.warning in (state.warning or "")
        if case.check:
            case.check(stored)


def test_healthy_feeds_in_the_same_poll_are_stored(hostile: HostilePoll) -> None:
    assert hostile.exit_code == 0, hostile.output  # some feeds failed; the pass worked
    repo = hostile.repo()
    assert repo.count_items("thr") == 9
    assert repo.count_items("ars") == 20
    assert repo.feed_state("thr").last_status == "ok"


def test_peak_memory_stays_bounded(hostile: HostilePoll) -> None:
    print(
        f"peak memory of reelwatch poll over {len(CASES)} hostile feeds, all its processes (PSS): "
        f"{hostile.peak_rss_mb:.0f} MB"
    )
    assert 20 < hostile.peak_rss_mb < PEAK_RSS_LIMIT_MB


def test_no_feed_reads_a_local_file(hostile: HostilePoll) -> None:
    stored = hostile.repo().list_items(limit=None)
    for s in stored:
        i = s.item
        for value in (i.title, i.summary, i.url, i.guid, i.author, *i.categories):
            assert PASSWD not in (value or "")
    for state in hostile.repo().feed_states().values():
        assert PASSWD not in f"{state.last_error} {state.warning} {state.title}"


def test_no_feed_reaches_another_server(hostile: HostilePoll) -> None:
    assert hostile.other.requests == []


def test_retry_after_in_seconds_or_as_a_date_sets_the_next_poll(hostile: HostilePoll) -> None:
    states = hostile.repo().feed_states()
    for name, wait in (("rate-limited", timedelta(hours=2)), ("unavailable", timedelta(hours=3))):
        state = states[name]
        assert state.next_poll is not None and state.last_attempt is not None
        waited = state.next_poll - state.last_attempt
        assert wait - timedelta(minutes=1) < waited < wait + timedelta(minutes=1), (name, waited)


def test_gone_feed_is_disabled(hostile: HostilePoll) -> None:
    state = hostile.repo().feed_state("gone")
    assert state.disabled and state.last_status == "gone"


def test_feeds_check_lists_each_hostile_feeds_error(
    hostile: HostilePoll, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REELWATCH_DATABASE_URL", hostile.database_url)
    capsys.readouterr()
    assert main(["feeds", "check", "--config", str(hostile.config), "--format", "json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    for case in CASES:
        if case.error is not None:
            assert case.error in rows[case.name]["error"], rows[case.name]
            assert rows[case.name]["failures"] == 1


def test_changing_guids_do_not_store_or_alert_the_same_article_again(
    hostile: HostilePoll, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert any(line.startswith("ALERT ") and "Sora" in line
               for line in hostile.output.splitlines())  # fmt: skip
    monkeypatch.setenv("REELWATCH_DATABASE_URL", hostile.database_url)
    before = hostile.repo().list_items(feed="changing-guids", limit=None)
    capsys.readouterr()
    assert main(["poll", "--config", str(hostile.config), "--feed", "changing-guids"]) == 0
    after = hostile.repo().list_items(feed="changing-guids", limit=None)
    assert len(hostile.feeds.seen("/changing-guids")) == 2  # it was fetched again...
    assert [s.id for s in after] == [s.id for s in before]  # ...nothing was new...
    assert "ALERT" not in capsys.readouterr().out  # ...and nothing alerted again


@pytest.mark.parametrize(
    "value, text",
    [
        ("Invoice \u202egnp.exe", "Invoice gnp.exe"),  # RLO: would display as "exe.png"
        ("a\u202ab\u202bc\u202cd\u202de", "abcde"),  # LRE, RLE, PDF, LRO
        ("\u2066isolated\u2069 \u2067text\u2068", "isolated text"),  # LRI, PDI, RLI, FSI
        ("zero\u200bwidth\u200c\u200d\u2060\ufeff", "zerowidth"),
        ("mark\u200e\u200f\u061c", "mark"),  # LRM, RLM, ALM
        ("&#x202e;escaped", "escaped"),  # as an entity, decoded then stripped
        (
            "l\u00e9gitime \u05e2\u05d1\u05e8\u05d9\u05ea",
            "l\u00e9gitime \u05e2\u05d1\u05e8\u05d9\u05ea",
        ),
    ],
)
def test_clean_text_strips_bidi_controls(value: str, text: str) -> None:
    assert clean_text(value, 500) == text


LATIN1 = rss(ONE, encoding="iso-8859-1").encode("latin-1")
STRAY = rss(ONE).encode().replace(b"pronto", b"pr\xffnto")


@pytest.mark.parametrize(
    "body, content_type, repaired",
    [
        (rss(ONE).encode(), "", rss(ONE).encode()),  # valid: untouched
        (STRAY, "", STRAY.replace(b"\xff", "\ufffd".encode())),  # one stray byte
        (STRAY, "text/xml; charset=UTF-8", STRAY.replace(b"\xff", "\ufffd".encode())),
        (LATIN1, "", LATIN1),  # says iso-8859-1: feedparser reads it
        (LATIN1, "application/rss+xml; charset=utf-8", LATIN1),  # Latin-1 served as UTF-8
        (STRAY, "text/xml; charset=windows-1252", STRAY),  # another charset: not ours to fix
        (rss(ONE, encoding="utf-16").encode("utf-16-le"), "", None),  # UTF-16 without a BOM
        (rss(ONE, encoding="utf-16").encode("utf-16"), "", None),
    ],
)
def test_repair_utf8(body: bytes, content_type: str, repaired: bytes | None) -> None:
    assert repair_utf8(body, content_type) == (body if repaired is None else repaired)


@pytest.mark.parametrize(
    "prolog, refused",
    [
        ("", False),
        ('<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" "x.dtd">', False),
        (f"<!--{'x' * 300_000}--><!DOCTYPE rss [<!ENTITY a 'b'>]>", True),
        (f"<!-- <a {'x' * 300_000} --><!DOCTYPE rss [<!ENTITY a 'b'>]>", True),
        (f"<?pi {'x' * 300_000}?>\n<!DOCTYPE rss [<!ENTITY a 'b'>]>", True),
        (f"{' ' * 300_000}<!DOCTYPE rss [<!ENTITY a 'b'>]>", True),
    ],
)
def test_entity_declarations_are_found_however_far_the_prolog_runs(
    prolog: str, refused: bool
) -> None:
    body = rss(ONE, prolog=prolog).encode()
    if refused:
        with pytest.raises(ParseError, match="declares XML entities"):
            refuse_dangerous_markup(body)
    else:
        refuse_dangerous_markup(body)
