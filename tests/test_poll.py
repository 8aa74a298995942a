"""`reelwatch poll` end to end: real feeds from a loopback server into SQLite and out to Slack."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.config import Config, FeedConfig, load_config
from monitor.pipeline import Poller, _hosts_interleaved
from storage import Repository, make_engine
from tests.conftest import fixture, write_config
from tests.servers import FeedServer, FeedServerAt, SlackServer, answer, late

THR = "thr_rescraped_rss2.xml"  # 9 items
ARS = "arstechnica_2024-04-01_rss2.xml"  # 20 items, 5 mention AI (Sora and friends)


def repo() -> Repository:
    return Repository(make_engine())


def poll(config: Path, *extra: str) -> int:
    return main(["poll", "--config", str(config), *extra])


def items_json(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict]:
    capsys.readouterr()
    assert main(["items", "--config", str(config), "--since", "36500d", "--limit", "1000",
                 "--format", "json", *extra]) == 0  # fmt: skip
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_first_poll_stores_every_item(feed_server: FeedServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"thr": feed_server.add("/thr.xml", fixture(THR))})
    assert poll(config) == 0
    stored = repo().list_items(limit=None)
    assert len(stored) == 9
    state = repo().feed_state("thr")
    assert state is not None and state.last_status == "ok" and state.last_success is not None
    assert state.etag and state.last_modified


def test_second_poll_sends_etag_and_stores_nothing(feed_server: FeedServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"thr": feed_server.add("/thr.xml", fixture(THR))})
    assert poll(config) == 0
    assert poll(config) == 0
    first, second = feed_server.seen("/thr.xml")
    assert "if-none-match" not in first.headers
    assert second.headers["if-none-match"] == repo().feed_state("thr").etag
    assert second.headers["if-modified-since"] == repo().feed_state("thr").last_modified
    assert repo().feed_state("thr").last_status == "unchanged"
    assert repo().count_items() == 9


def test_changed_feed_stores_only_the_new_items(feed_server: FeedServer, tmp_path: Path) -> None:
    whole = fixture(THR)
    # the same feed an hour earlier: its first item not yet published
    start = whole.index(b"<item>")
    end = whole.index(b"</item>", start) + len(b"</item>")
    earlier = whole[:start] + whole[end:]
    config = write_config(tmp_path, {"thr": feed_server.add("/thr.xml", earlier)})
    assert poll(config) == 0
    assert repo().count_items() == 8
    feed_server.add("/thr.xml", whole)
    assert poll(config) == 0
    assert repo().count_items() == 9
    assert poll(config) == 0  # polling again stores nothing twice
    assert repo().count_items() == 9


def test_request_is_polite(feed_server: FeedServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"thr": feed_server.add("/thr.xml", fixture(THR))})
    poll(config)
    (request,) = feed_server.seen("/thr.xml")
    assert request.headers["user-agent"].startswith("reelwatch/")
    assert request.headers["accept-encoding"] == "gzip, deflate"


def _truncated(body: bytes) -> bytes:
    return body[: len(body) // 2]


def _slow(handler) -> None:  # headers, then nothing: the total deadline must end it
    handler.send_response(200)
    handler.send_header("Content-Type", "application/rss+xml")
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    for _ in range(20):
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(0.5)


BROKEN = {
    "server-error": dict(body=b"oops", status=500, content_type="text/plain"),
    "html-page": dict(
        body=b"<!DOCTYPE html><html><head><title>Home</title></head><body>hi</body></html>",
        content_type="text/html",
    ),
    "entities": dict(
        body=b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;">]><rss><channel><title>&b;</title></channel></rss>'
    ),
    "gzip-bomb": dict(
        body=gzip.compress(b"<rss>" + b" " * (64 * 1024 * 1024)),
        headers={"Content-Encoding": "gzip"},
    ),
    "file-path": dict(body=b"/etc/passwd", content_type="text/plain"),
    "timeout": dict(handler=_slow),
}


def test_broken_feeds_are_recorded_and_the_others_stored(
    feed_server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feeds = {"thr": feed_server.add("/thr.xml", fixture(THR))}
    for name, kw in BROKEN.items():
        feeds[name] = feed_server.add(f"/{name}", **kw)
    feeds["truncated"] = feed_server.add("/truncated", _truncated(fixture(ARS)))
    feeds["ars"] = feed_server.add("/ars.xml", fixture(ARS))
    config = write_config(tmp_path, feeds, timeout="2s")

    assert poll(config) == 0  # some feeds failed, the pass itself worked
    out, log = capsys.readouterr()
    states = repo().feed_states()
    # the log names each failed feed and the one read despite its problem, not every
    # feed polled (the poll cycle's line counts those)
    assert all(f"feed failed feed={name} " in log for name in BROKEN)
    assert "feed polled feed=truncated " in log and "warning='not well-formed" in log
    assert "feed polled feed=thr " not in log and "poll cycle feeds=9 ok=3" in log
    errors = {name: states[name].last_error for name in BROKEN}
    assert "server error (500" in errors["server-error"]
    assert "HTML page" in errors["html-page"]
    assert "declares XML entities" in errors["entities"]
    assert "too large" in errors["gzip-bomb"]
    assert "not an RSS or Atom feed" in errors["file-path"]
    assert "timed out after 2 s" in errors["timeout"]
    for name in BROKEN:
        assert states[name].last_status == "failed"
        assert states[name].consecutive_failures == 1
        assert states[name].next_poll is not None
        assert f"{name}: " in out
    # the truncated document is repaired as far as possible and says so
    assert (
        states["truncated"].last_status == "ok" and "not well-formed" in states["truncated"].warning
    )
    assert repo().count_items("thr") == 9
    assert repo().count_items("ars") == 20
    assert repo().count_items("file-path") == 0
    assert poll(config, "--log-level", "debug") == 0  # every feed's line, for a closer look
    assert "feed polled feed=thr status=304 " in capsys.readouterr().err


def test_items_json_lists_what_matched_and_why(
    feed_server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, {"ars": feed_server.add("/ars.xml", fixture(ARS))})
    assert poll(config) == 0
    rows = items_json(config, capsys)
    assert len(rows) == 20
    for row in rows:
        assert {"id", "feed", "guid", "title", "url", "published", "language", "relevant",
                "topics", "terms"} <= row.keys()  # fmt: skip
        assert row["feed"] == "ars" and row["published"].endswith("+00:00")
    sora = next(r for r in rows if "Sora" in r["title"])
    assert sora["relevant"] is True and sora["topics"] == ["ai"] and "Sora" in sora["terms"]
    relevant = items_json(config, capsys, "--topic", "ai")
    assert {r["id"] for r in relevant} == {r["id"] for r in rows if r["relevant"]}
    assert all(not r["topics"] for r in rows if not r["relevant"])


def test_items_table_says_when_nothing_is_in_range(
    feed_server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, {"ars": feed_server.add("/ars.xml", fixture(ARS))})
    assert main(["items", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no items published in the last 7d (widen with --since" in captured.err
    assert main(["items", "--config", str(config), "--topic", "ai", "--since", "36h"]) == 0
    assert "no items in topic 'ai' published in the last 36h" in capsys.readouterr().err
    assert poll(config) == 0
    capsys.readouterr()
    assert main(["items", "--config", str(config), "--since", "3650d"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("ID") and captured.err == ""


def test_alerts_go_to_the_console_without_slack(
    feed_server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, {"ars": feed_server.add("/ars.xml", fixture(ARS))})
    assert poll(config) == 0
    out = capsys.readouterr().out
    alerts = [line for line in out.splitlines() if line.startswith("ALERT ")]
    relevant = [s for s in repo().list_items(limit=None) if s.matches]
    assert relevant and len(alerts) == len(relevant)
    assert any("Sora" in line for line in alerts)
    assert poll(config) == 0  # nothing new: nothing alerts again
    assert "ALERT" not in capsys.readouterr().out


def _bot(monkeypatch: pytest.MonkeyPatch, slack: SlackServer) -> None:
    monkeypatch.setenv("REELWATCH_SLACK_BOT_TOKEN", slack.token)
    monkeypatch.setenv("REELWATCH_SLACK_API_URL", slack.api_url)


def test_slack_500_leaves_delivery_pending_and_next_dispatch_sends_it_once(
    feed_server: FeedServer, slack_server: SlackServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from alerts.outbox import dispatch_pending
    from alerts.slack import SlackSettings
    from monitor.pipeline import utcnow

    _bot(monkeypatch, slack_server)
    config = write_config(
        tmp_path, {"ars": feed_server.add("/ars.xml", fixture(ARS))},
        extra='slack:\n  default_channel: "#ai-news"\n',
    )  # fmt: skip
    slack_server.fail_next(500, b"<html>Internal Server Error</html>")
    assert poll(config) == 0
    relevant_count = sum(1 for s in repo().list_items(limit=None) if s.matches)
    assert relevant_count >= 4
    assert len(slack_server.calls) == relevant_count - 1
    r = repo()
    counts = r.delivery_counts()
    assert counts == {"sent": relevant_count - 1, "pending": 1}
    (pending,) = r.deliveries("pending")
    assert pending.attempts == 1 and "HTTP 500" in pending.last_error
    # not due yet: a dispatch right now sends nothing
    slack = SlackSettings.from_env()
    assert dispatch_pending(r, slack.sender_for, utcnow()).sent == 0
    later = utcnow() + __import__("datetime").timedelta(minutes=5)
    assert dispatch_pending(r, slack.sender_for, later).sent == 1
    assert dispatch_pending(r, slack.sender_for, later).sent == 0
    assert r.delivery_counts() == {"sent": relevant_count}
    titles = [c.payload["text"] for c in slack_server.calls]
    assert len(titles) == len(set(titles)) == relevant_count
    assert all(c.payload["channel"] == "#ai-news" for c in slack_server.calls)
    assert all(
        c.headers["authorization"] == f"Bearer {slack_server.token}" for c in slack_server.calls
    )


def test_webhook_receives_block_kit_alerts(
    feed_server: FeedServer, slack_server: SlackServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("REELWATCH_SLACK_WEBHOOK_URL", slack_server.webhook_url)
    config = write_config(tmp_path, {"ars": feed_server.add("/ars.xml", fixture(ARS))})
    assert poll(config) == 0
    assert len(slack_server.calls) == sum(1 for s in repo().list_items(limit=None) if s.matches)
    payload = slack_server.calls[0].payload
    assert payload["blocks"][0]["type"] == "section"
    assert payload["text"]


def test_permanent_slack_error_marks_delivery_failed(
    feed_server: FeedServer, slack_server: SlackServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _bot(monkeypatch, slack_server)
    config = write_config(
        tmp_path, {"ars": feed_server.add("/ars.xml", fixture(ARS))},
        extra='slack:\n  default_channel: "#nowhere"\n',
    )  # fmt: skip
    assert poll(config) == 0
    assert repo().delivery_counts() == {"failed": 5}
    assert slack_server.calls == []
    capsys.readouterr()
    assert (
        main(["deliveries", "--config", str(config), "--status", "failed", "--format", "json"]) == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 5 and all(r["status"] == "failed" and r["title"] for r in rows)
    assert all("channel not found (channel_not_found)" in r["error"] for r in rows)


def test_poll_unknown_feed_is_bad_usage(tmp_path: Path, feed_server: FeedServer) -> None:
    config = write_config(tmp_path, {"thr": feed_server.add("/thr.xml", fixture(THR))})
    assert poll(config, "--feed", "nope") == 2
    assert poll(config, "--feed", "thr") == 0


def test_gone_feed_is_disabled_until_its_url_changes(
    feed_server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = feed_server.add("/gone", b"", status=410, conditional=False)
    config = write_config(tmp_path, {"old": gone})
    assert poll(config) == 1  # every feed failed
    state = repo().feed_state("old")
    assert state.disabled and state.last_status == "gone" and "410" in state.last_error
    assert poll(config) == 0
    assert "skipped" in capsys.readouterr().err
    assert len(feed_server.seen("/gone")) == 1  # not asked again
    assert main(["feeds", "check", "--config", str(config), "--format", "json"]) == 0
    out = capsys.readouterr()
    assert "1 feeds (0 enabled, 1 gone: give them a new url)" in out.err
    assert json.loads(out.out)["enabled"] is False  # one JSON object per line
    config = write_config(tmp_path, {"old": feed_server.add("/thr.xml", fixture(THR))})
    assert poll(config) == 0
    assert not repo().feed_state("old").disabled and repo().count_items("old") == 9


def test_a_password_in_a_feed_url_is_never_logged_or_listed(
    feed_server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = feed_server.add("/intranet", b"", status=500, conditional=False)
    secret = url.replace("http://", "http://reader:hunter2secret@")
    config = write_config(tmp_path, {"intranet": secret})
    poll(config)
    assert main(["feeds", "check", "--config", str(config), "--format", "json"]) == 0
    out = capsys.readouterr()
    assert "feed failed feed=intranet url=http://reader:***@127.0.0.1" in out.err
    assert '"url": "http://reader:***@127.0.0.1' in out.out
    assert "hunter2secret" not in out.out + out.err
    assert {k.lower(): v for k, v in feed_server.seen("/intranet")[0].headers.items()}[
        "authorization"
    ].startswith("Basic ")  # it was sent: only not shown


def test_feeds_status_shows_volume_errors_and_timing(
    feed_server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path,
        {
            "ars": feed_server.add("/ars.xml", fixture(ARS)),
            "down": feed_server.add("/down", b"", status=500, conditional=False),
        },
    )
    poll(config)
    capsys.readouterr()
    assert main(["feeds", "status", "--config", str(config), "--format", "json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["ars"]["items_7d"] == 20 and rows["ars"]["matches_7d"] == 5
    assert rows["ars"]["status"] == "ok" and rows["ars"]["mean_ms"] is not None
    assert rows["down"]["failures"] == 1 and "500" in rows["down"]["error"]
    assert rows["down"]["flags"] == []  # one failure of a new feed is not yet a problem


@pytest.mark.parametrize(
    "urls, order",
    [
        (["http://a/1", "http://a/2", "http://a/3", "http://b/", "http://c/"],
         ["a/1", "b/", "c/", "a/2", "a/3"]),
        (["http://a/1", "http://b/1", "http://a/2", "http://b/2"],
         ["a/1", "b/1", "a/2", "b/2"]),
        (["https://a/1", "http://A:80/2"], ["a/1", "A:80/2"]),  # one host, any spelling
        ([], []),
    ],
)  # fmt: skip
def test_feeds_are_polled_one_host_in_turn(urls: list[str], order: list[str]) -> None:
    feeds = [FeedConfig(name=f"f{i}", url=url) for i, url in enumerate(urls)]
    assert [f.url.split("//")[1] for f in _hosts_interleaved(feeds)] == order


@contextlib.contextmanager
def slow_outlet_and_another_host(
    feed_server: FeedServer, tmp_path: Path, outlets: int, concurrency: str
) -> Iterator[tuple[Config, Repository, Poller]]:
    """`outlets` feeds of one slow outlet (1.5 s an answer), then a feed of another host
    (listed last), and a poller for them."""
    body = fixture(ARS)
    slow = late(body, 1.5)
    feeds = {f"outlet{i}": feed_server.add(f"/section{i}", handler=slow) for i in range(outlets)}
    other = FeedServerAt("127.0.0.2")
    try:
        feeds["other"] = other.add("/feed", body)
        config = load_config(write_config(tmp_path, feeds, concurrency=concurrency, timeout="20s"))
        store = Repository(make_engine(f"sqlite:///{tmp_path / 'r.db'}"))
        store.create_schema()
        yield config, store, Poller(config, store, router=None, parse_workers=1)
    finally:
        other.close()


def test_a_run_of_one_slow_outlets_feeds_does_not_hold_up_another_host(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    """Six feeds of one slow outlet listed first (two polled at a time, 1.5 s each), then
    another host's feed: that one is polled at once, not after the outlet's."""
    with slow_outlet_and_another_host(feed_server, tmp_path, 6, "2") as (config, store, poller):
        started = time.monotonic()
        done: dict[str, float] = {}

        async def go() -> None:
            try:
                await poller.poll_many(
                    config.feeds, on_done=lambda r: done.setdefault(r.feed, time.monotonic())
                )
            finally:
                await poller.aclose()

        asyncio.run(go())
    took = {feed: at - started for feed, at in done.items()}
    assert len(took) == 7 and store.count_items() == 7 * 20
    assert took["other"] < 1.5 <= min(t for f, t in took.items() if f != "other"), took


def test_one_slow_outlets_due_feeds_do_not_hold_up_another_hosts_in_the_service(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    """`reelwatch run` polls each due feed as its own job: eight feeds of one slow outlet
    due together (two polled at a time, 1.5 s each) must not take the eight slots every
    feed between fetch and store shares (2 x concurrency 4), leaving another host's feed
    due with them to wait: it was polled after 6 s, behind them."""
    with slow_outlet_and_another_host(feed_server, tmp_path, 8, "4") as (config, store, poller):
        done: dict[str, float] = {}

        async def job(feed: FeedConfig) -> None:
            report = await poller.poll_feed(feed)
            done[report.feed] = time.monotonic()

        async def go() -> float:
            try:
                outlets, (last,) = config.feeds[:-1], config.feeds[-1:]
                jobs = [asyncio.create_task(job(f)) for f in outlets]
                await asyncio.sleep(0.1)  # the outlet's jobs are all waiting or fetching
                started = time.monotonic()
                await asyncio.gather(*jobs, job(last))
                return started
            finally:
                await poller.aclose()

        started = asyncio.run(go())
    took = {feed: at - started for feed, at in done.items()}
    assert len(took) == 9 and store.count_items() == 9 * 20
    assert took["other"] < 1.0, took
    assert max(took.values()) > 5.5  # the outlet was still asked two feeds at a time


class _CountingRepository(Repository):
    """The real repository, counting the batches of polls it is asked to store."""

    def __init__(self, url: str) -> None:
        super().__init__(make_engine(url))
        self.batches: list[int] = []

    def store_polls(self, polls):  # type: ignore[no-untyped-def]
        self.batches.append(len(polls))
        return super().store_polls(polls)


def test_polls_ending_together_are_stored_together_and_a_lone_one_alone(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    """A group commit: storage pays per transaction, so the writes of polls under way
    wait briefly for each other; a poll with none under way beside it is stored alone."""
    from tests.test_reload import rss

    feeds = {f"f{i}": feed_server.add(f"/f{i}.xml", rss(f"f{i}", f"Story {i}")) for i in range(12)}
    config = load_config(write_config(tmp_path, feeds))
    store = _CountingRepository(f"sqlite:///{tmp_path / 'r.db'}")
    store.create_schema()
    poller = Poller(config, store, router=None, parse_workers=1)

    async def go() -> None:
        try:
            await poller.poll_many(config.feeds)
            await poller.poll_feed(config.feeds[0])
        finally:
            await poller.aclose()

    asyncio.run(go())
    assert store.count_items() == 12
    assert sum(store.batches[:-1]) == 12 and len(store.batches) <= 3, store.batches
    assert store.batches[-1] == 1


def test_a_poll_alerts_on_the_feeds_read_first_while_it_polls_the_others(
    feed_server: FeedServer, slack_server: SlackServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A first poll of many feeds sends as it goes (every SEND_EVERY), as `run` does: the
    alerts of a feed read early do not wait for the slowest feed, and none is sent twice."""
    import monitor.cli

    _bot(monkeypatch, slack_server)
    monkeypatch.setattr(monitor.cli, "SEND_EVERY", 0.3)
    body = fixture(THR)
    alerted_before_answer: list[bool] = []

    def slow(handler: BaseHTTPRequestHandler) -> None:  # answers once alerts came, or at 8 s
        deadline = time.monotonic() + 8
        while not slack_server.calls and time.monotonic() < deadline:
            time.sleep(0.05)
        alerted_before_answer.append(bool(slack_server.calls))
        answer(handler, body)

    config = write_config(
        tmp_path,
        {"ars": feed_server.add("/ars.xml", fixture(ARS)),
         "slow": feed_server.add("/slow.xml", handler=slow)},
        extra='slack:\n  default_channel: "#ai-news"\n', timeout="20s",
    )  # fmt: skip
    assert poll(config) == 0
    assert alerted_before_answer == [True]
    relevant = [s for s in repo().list_items(limit=None) if s.matches]
    titles = [c.payload["text"] for c in slack_server.calls]
    assert len(titles) == len(set(titles)) == len(relevant) >= 4
    assert repo().delivery_counts() == {"sent": len(relevant)}


def _screen(raw: str) -> list[str]:
    """The lines a terminal shows for `raw`: a carriage return goes back to the line's
    start and what follows overwrites what was there."""
    lines = []
    for written in raw.replace("\r\n", "\n").split("\n"):
        line = ""
        for part in written.split("\r"):
            line = part + line[len(part) :]
        lines.append(line.rstrip())
    return lines


def test_on_a_terminal_alerts_and_log_lines_print_above_the_progress_bar(
    feed_server: FeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal, `reelwatch poll` draws a progress bar. The alerts it prints while
    polling (no Slack set up) and its log lines (a dead feed) each get a line of their
    own above the bar; written where the bar stood, they were glued to its end."""
    import fcntl
    import os
    import struct
    import sys
    import termios
    import threading

    import monitor.cli

    monkeypatch.setattr(monitor.cli, "SEND_EVERY", 0.3)
    config = write_config(
        tmp_path,
        {"ars": feed_server.add("/ars.xml", fixture(ARS)),  # the poll under way meanwhile:
         "slow": feed_server.add("/slow.xml", handler=late(fixture(THR), 2.0)),
         "dead": feed_server.add("/dead.xml", status=404)},
    )  # fmt: skip
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    chunks: list[bytes] = []

    def read() -> None:
        with contextlib.suppress(OSError):  # the terminal closed
            while data := os.read(master, 65536):
                chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    # stdout and stderr two streams on one terminal, as a shell gives them
    with (
        open(slave, "w", encoding="utf-8") as terminal,
        open(os.dup(slave), "w", encoding="utf-8") as errors,
    ):
        monkeypatch.setattr(sys, "stdout", terminal)
        monkeypatch.setattr(sys, "stderr", errors)
        assert poll(config) == 0
        terminal.flush()
        errors.flush()
        monkeypatch.undo()
    reader.join(timeout=10)
    os.close(master)
    raw = b"".join(chunks).decode("utf-8", "replace")
    assert "%|" in raw  # a bar was drawn (and wiped at the end)
    screen = _screen(raw)
    alerts = [line for line in screen if "ALERT" in line]
    dead = [line for line in screen if "feed failed feed=dead" in line]
    assert alerts and dead, screen
    for line in alerts + dead:
        assert line.startswith(("ALERT ", "20")) and "%|" not in line, line
