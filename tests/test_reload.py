"""A saved feeds.yaml is applied by the running service; a broken one is refused, once."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerts.routing import make_router
from alerts.slack import SlackSettings
from monitor.config import StartRefusal, parse_config
from monitor.errors import ConfigError
from monitor.pipeline import Poller
from monitor.reload import diff_config
from monitor.scheduler import Service
from storage import Repository, make_engine
from tests.servers import FeedServer, SlackServer
from tests.test_service import stop, wait_for

BASE = """\
defaults:
  interval: 15m
feeds:
  - name: thr
    url: https://thr.example/feed
  - name: variety
    url: https://variety.example/feed
topics:
  ai:
    label: AI
    query: [AI]
slack:
  default_channel: "#ai-news"
"""


@pytest.mark.parametrize(
    "edit, summary",
    [
        ((), "feeds_added=- feeds_removed=- feeds_changed=- topics_changed=- "
             "watchlists_changed=- slack=same digests=same"),
        ((("  - name: variety\n    url: https://variety.example/feed\n", ""),),
         "feeds_added=- feeds_removed=variety feeds_changed=- topics_changed=- "
         "watchlists_changed=- slack=same digests=same"),
        ((("topics:", "  - name: deadline\n    url: https://deadline.example/feed\ntopics:"),
          ("https://thr.example/feed", "https://thr.example/rss")),
         "feeds_added=deadline feeds_removed=- feeds_changed=thr topics_changed=- "
         "watchlists_changed=- slack=same digests=same"),
        ((("interval: 15m", "interval: 1h"),),  # the default interval changes every feed
         "feeds_added=- feeds_removed=- feeds_changed=thr,variety topics_changed=- "
         "watchlists_changed=- slack=same digests=same"),
        ((("query: [AI]", "query: [AI, Sora]"), ('"#ai-news"', '"#news"')),
         "feeds_added=- feeds_removed=- feeds_changed=- topics_changed=ai "
         "watchlists_changed=- slack=changed digests=same"),
        ((("defaults:\n", "defaults:\n  user_agent: me/1.0\n"),
          ("slack:", "watchlists:\n  studios: [Lionsgate]\nslack:")),
         "feeds_added=- feeds_removed=- feeds_changed=- topics_changed=- "
         "watchlists_changed=studios slack=same digests=same restart_needed=defaults.user_agent"),
    ],
)  # fmt: skip
def test_reload_summary_names_what_changed(edit: tuple[tuple[str, str], ...], summary: str) -> None:
    text = BASE
    for old, new in edit:
        assert old in text
        text = text.replace(old, new)
    assert diff_config(parse_config(BASE), parse_config(text)).summary() == summary


def rss(name: str, title: str) -> bytes:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>{name}</title><link>https://{name}.example/</link>
<description>news</description>
<item><title>{title}</title><link>https://{name}.example/1</link><guid>{name}-1</guid>
<pubDate>Mon, 23 Nov 2026 08:00:00 GMT</pubDate></item>
</channel></rss>""".encode()


def test_apply_reschedules_feeds_and_swaps_the_rules_and_routes(feed_server: FeedServer) -> None:
    a = feed_server.add("/a.xml", rss("a", "A new song tops the charts"))
    b = feed_server.add("/b.xml", rss("b", "Box office weekend"))
    c = feed_server.add("/c.xml", rss("c", "A new song written by AI"))
    old = parse_config(
        f"feeds:\n  - name: a\n    url: {a}\n  - name: b\n    url: {b}\n"
        "topics:\n  ai:\n    label: AI\n    query: [AI]\n"
        "slack:\n  default_channel: '#ai-news'\n"
    )
    new = parse_config(
        f"feeds:\n  - name: a\n    url: {a}\n    interval: 1h\n  - name: c\n    url: {c}\n"
        "topics:\n  ai:\n    label: AI\n    query: [AI]\n"
        "  music:\n    label: Music\n    query: [song]\n"
        "slack:\n  default_channel: '#ai-news'\n"
        "  routes:\n    - topics: [music]\n      channel: '#music'\n"
    )
    repo = Repository(make_engine())
    repo.create_schema()
    slack = SlackSettings(webhook_url=None, bot_token="xoxb-unused", api_url="http://127.0.0.1:9/")

    async def scenario() -> None:
        poller = Poller(old, repo, router=make_router(old.slack, slack.transport), parse_workers=1)
        service = Service(old, poller, slack)
        try:
            await service.schedule_feeds()
            assert {j.id for j in service.scheduler.get_jobs()} == {"feed:a", "feed:b"}
            change = await service.apply(new)
            assert (change.feeds_added, change.feeds_removed, change.feeds_changed) == (
                ("c",), ("b",), ("a",)
            )  # fmt: skip
            jobs = {j.id: j for j in service.scheduler.get_jobs()}
            assert set(jobs) == {"feed:a", "feed:c"}
            assert jobs["feed:a"].trigger.interval.total_seconds() == 3600
            assert jobs["feed:a"].args[0] == new.feed("a")
            assert service.config is new and poller.config is new
            # the new topic classifies, and the new route takes what it matches
            report = await poller.poll_feed(new.feed("c"))
            assert (report.new_items, report.matches, report.deliveries) == (1, 2, 1)
        finally:
            await poller.aclose()

    asyncio.run(scenario())
    (stored,) = repo.list_items(feed="c")
    assert {m.topic for m in stored.matches} == {"ai", "music"}
    assert [d.channel for d in repo.deliveries()] == ["#music"]


def test_without_slack_a_refused_edit_is_printed_not_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """No token, no webhook: the refusal notice goes to stdout like the alerts, even with
    a default_channel in the file (it was 'REELWATCH_SLACK_BOT_TOKEN is not set')."""
    path = tmp_path / "feeds.yaml"
    path.write_text(feeds_yaml({"a": "http://127.0.0.1:9/a.xml"}))
    config = parse_config(path.read_text())
    repo = Repository(make_engine(f"sqlite:///{tmp_path / 'r.db'}"))
    repo.create_schema()
    slack = SlackSettings(webhook_url=None, bot_token=None, api_url="http://127.0.0.1:9/")

    async def scenario() -> None:
        poller = Poller(config, repo, router=make_router(config.slack, slack.transport))
        service = Service(config, poller, slack, path)
        try:
            path.write_text("\x00")
            await service.reload()
        finally:
            await poller.aclose()

    asyncio.run(scenario())
    out = capsys.readouterr().out
    assert "was refused" in out and "the control character U+0000 is not allowed" in out
    assert "notice not sent" not in caplog.text and "config refused" in caplog.text


def test_a_good_edit_the_database_kept_from_being_applied_is_applied_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """apply reads the feeds' states first; with the database away at that moment (here:
    its feeds table), the edit was recorded as seen and never applied, silently."""
    path = tmp_path / "feeds.yaml"
    path.write_text(feeds_yaml({"a": "http://127.0.0.1:9/a.xml"}))
    config = parse_config(path.read_text())
    db = tmp_path / "r.db"
    repo = Repository(make_engine(f"sqlite:///{db}"))
    repo.create_schema()
    slack = SlackSettings(webhook_url=None, bot_token=None, api_url="http://127.0.0.1:9/")

    def rename(old: str, new: str) -> None:
        with sqlite3.connect(db) as conn:
            conn.execute(f"ALTER TABLE {old} RENAME TO {new}")

    async def scenario() -> tuple[set[str], bool, set[str]]:
        poller = Poller(config, repo, router=make_router(config.slack, slack.transport))
        service = Service(config, poller, slack, path)
        try:
            await service.schedule_feeds()
            path.write_text(feeds_yaml({"a": "http://127.0.0.1:9/a.xml",
                                        "b": "http://127.0.0.1:9/b.xml"}))  # fmt: skip
            rename("feeds", "feeds_away")
            await service.reload()
            during = {j.id for j in service.scheduler.get_jobs()}
            retry = service.scheduler.get_job("config-retry") is not None
            rename("feeds_away", "feeds")
            await service.reload()  # what the retry job runs (or the next save)
            return during, retry, {j.id for j in service.scheduler.get_jobs()}
        finally:
            await poller.aclose()

    during, retry, after = asyncio.run(scenario())
    assert during == {"feed:a", "config-retry"} and retry
    assert "config not applied yet, retrying in 30 s" in caplog.text
    assert {"feed:a", "feed:b"} <= after


@pytest.mark.parametrize("file_at_start", ["read", "missing"])
def test_a_save_made_before_the_watch_began_is_applied_once_it_has(
    tmp_path: Path, file_at_start: str
) -> None:
    """feeds.yaml saved while the service starts (after it read the file, before its watch
    could see a save) is applied once the watch is set up, not at the next edit. So is a
    file put back then when the service started on the last applied copy because the
    file was not there (the watch took it for the text started on)."""
    path = tmp_path / "feeds.yaml"
    started_on = feeds_yaml({"a": "http://127.0.0.1:9/a.xml"})
    path.write_text(feeds_yaml({"a": "http://127.0.0.1:9/a.xml", "b": "http://127.0.0.1:9/b.xml"}))
    config = parse_config(started_on)
    repo = Repository(make_engine(f"sqlite:///{tmp_path / 'r.db'}"))
    repo.create_schema()
    slack = SlackSettings(webhook_url=None, bot_token=None, api_url="http://127.0.0.1:9/")
    if file_at_start == "read":
        start = {"config_text": started_on}
    else:
        missing = ConfigError(f"{path}: no such file")
        start = {"config_text": None, "refused": StartRefusal(missing, datetime.now(UTC))}

    async def scenario() -> list[str]:
        poller = Poller(config, repo, router=make_router(config.slack, slack.transport))
        service = Service(config, poller, slack, path, **start)
        watch = asyncio.create_task(service.watch_config())
        try:
            for _ in range(100):
                await asyncio.sleep(0.1)
                if len(service.config.feeds) == 2:
                    break
            return [f.name for f in service.config.feeds]
        finally:
            service._stop.set()
            await watch
            await poller.aclose()

    assert asyncio.run(scenario()) == ["a", "b"]


def feeds_yaml(feeds: dict[str, str], broken: bool = False) -> str:
    lines = ["defaults:", "  interval: 1m", "  timeout: 5s", "feeds:"]
    for name, url in feeds.items():
        lines += [f"  - name: {name}", f"    url: {url}"]
    if broken:
        lines.append("    interval: 15 minutes")
    lines += [
        "topics:",
        "  ai:",
        "    label: AI",
        "    query: [AI, artificial intelligence]",
        "slack:",
        '  default_channel: "#ai-news"',
    ]
    return "\n".join(lines) + "\n"


def save(path: Path, text: str) -> None:
    """Save the way most editors do: write a temporary file, rename it over the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_run_applies_a_saved_feeds_yaml_and_refuses_a_broken_one_once(
    feed_server: FeedServer, slack_server: SlackServer, tmp_path: Path
) -> None:
    urls = {n: feed_server.add(f"/{n}.xml", rss(n, f"{n} box office")) for n in ("a", "b", "c")}
    config = tmp_path / "feeds.yaml"
    config.write_text(feeds_yaml({"a": urls["a"]}))
    log_path = tmp_path / "run.log"
    env = dict(os.environ)
    env |= {"REELWATCH_SLACK_BOT_TOKEN": slack_server.token,
            "REELWATCH_SLACK_API_URL": slack_server.api_url}  # fmt: skip
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(config)],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    def log() -> str:
        return log_path.read_text()

    def refusals() -> list:
        return [c for c in slack_server.calls if "was refused" in c.payload.get("text", "")]

    try:
        assert wait_for(lambda: len(feed_server.seen("/a.xml")) == 1)
        first_poll_of_a = time.monotonic()

        # a new feed, saved the way editors save: polled at once, no restart
        save(config, feeds_yaml({"a": urls["a"], "b": urls["b"]}))
        assert wait_for(lambda: len(feed_server.seen("/b.xml")) == 1, 20), log()
        assert "config reloaded feeds_added=b feeds_removed=- feeds_changed=-" in log()

        # a broken edit is refused with the file:line:col text, and said on Slack once
        broken = feeds_yaml({"a": urls["a"], "b": urls["b"]}, broken=True)
        with pytest.raises(ConfigError) as refused:
            parse_config(broken, str(config))
        problem = str(refused.value)
        assert problem.startswith(f"{config}:9:15: feeds[1].interval: '15 minutes'")
        save(config, broken)
        assert wait_for(lambda: len(refusals()) == 1, 20), log()
        assert refusals()[0].payload["channel"] == "#ai-news"
        assert problem in refusals()[0].payload["text"]
        assert f"error config refused, still running on the last good one: {problem}" in log()
        # saved again, broken the same way (in place this time): logged, not said again
        config.write_text(broken + "# still thinking\n")
        assert wait_for(lambda: log().count("config refused") == 2, 20), log()

        # the service goes on polling on the last good configuration
        assert wait_for(lambda: len(feed_server.seen("/a.xml")) == 2, 90), log()
        assert time.monotonic() - first_poll_of_a > 50  # on its 1m interval, not restarted
        assert proc.poll() is None

        # fixed: applied; broken again after that: said again
        save(config, feeds_yaml(urls))
        assert wait_for(lambda: len(feed_server.seen("/c.xml")) == 1, 20), log()
        assert "config reloaded feeds_added=c" in log()
        save(config, broken)
        assert wait_for(lambda: len(refusals()) == 2, 20), log()
        assert len(slack_server.calls) == 2  # nothing else was posted
    finally:
        code, _ = stop(proc)
    assert code == 0, log()
    assert log().count("service started") == 1


def test_a_restart_on_a_broken_feeds_yaml_runs_on_the_one_last_applied(
    feed_server: FeedServer, slack_server: SlackServer, tmp_path: Path
) -> None:
    # A bad edit, then a restart (a reboot, a supervisor, a deploy): monitoring goes on
    # with the feeds.yaml last applied, the problem is said, and a fix is applied as ever.
    urls = {n: feed_server.add(f"/{n}.xml", rss(n, f"{n} box office")) for n in ("a", "b", "c")}
    config = tmp_path / "feeds.yaml"
    env = dict(os.environ)
    env |= {"REELWATCH_SLACK_BOT_TOKEN": slack_server.token,
            "REELWATCH_SLACK_API_URL": slack_server.api_url}  # fmt: skip
    broken = feeds_yaml({"a": urls["a"]}, broken=True)
    with pytest.raises(ConfigError) as refused:
        parse_config(broken, str(config))
    problem = str(refused.value)

    def run(log_path: Path) -> subprocess.Popen:
        with log_path.open("w") as log_file:
            return subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "--config", str(config)],
                env=env, stdout=log_file, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip

    def refusals() -> list:
        return [c for c in slack_server.calls if "was refused" in c.payload.get("text", "")]

    # never applied: a broken file stops `run` as before, saying why
    config.write_text(broken)
    first = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(config)],
                           env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert first.returncode == 2 and problem in first.stderr, first.stderr

    config.write_text(feeds_yaml({"a": urls["a"], "b": urls["b"]}))
    proc = run(tmp_path / "1.log")
    try:
        assert wait_for(lambda: len(feed_server.seen("/b.xml")) == 1), (
            tmp_path / "1.log"
        ).read_text()
    finally:
        stop(proc)

    save(config, broken)
    log_path = tmp_path / "2.log"
    proc = run(log_path)
    try:
        assert wait_for(lambda: len(refusals()) == 1, 20), log_path.read_text()
        assert problem in refusals()[0].payload["text"]
        log = log_path.read_text()
        assert "service started feeds=2" in log  # a and b, as applied
        applied = re.search(r"started on the one applied (\S+ \S+) UTC: ", log)
        assert applied and f"{applied.group()}{problem}" in log, log
        assert f"runs on the one applied {applied.group(1)} UTC" in refusals()[0].payload["text"]
        # fixed while running on the copy: applied, and kept as the last applied
        save(config, feeds_yaml(urls))
        assert wait_for(lambda: len(feed_server.seen("/c.xml")) == 1, 20), log_path.read_text()
        assert "config reloaded feeds_added=c" in log_path.read_text()
    finally:
        code, _ = stop(proc)
    assert code == 0, log_path.read_text()

    save(config, broken)
    log_path = tmp_path / "3.log"
    proc = run(log_path)
    try:
        assert wait_for(lambda: len(refusals()) == 2, 20), log_path.read_text()
        assert "service started feeds=3" in log_path.read_text()  # a, b and c
    finally:
        code, _ = stop(proc)
    assert code == 0, log_path.read_text()


def test_a_restart_without_feeds_yaml_s_directory_watches_for_it_and_stops_cleanly(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    # run on the last applied feeds.yaml because its directory is not there (a volume not
    # mounted, a release directory removed): the file is applied once it is back, and the
    # service stops as ever (the watch of a missing directory used to end, then crash the stop)
    urls = {n: feed_server.add(f"/{n}.xml", rss(n, f"{n} box office")) for n in ("a", "b")}
    directory = tmp_path / "conf"
    directory.mkdir()
    config = directory / "feeds.yaml"
    config.write_text(feeds_yaml({"a": urls["a"]}))

    def run(log_path: Path) -> subprocess.Popen:
        with log_path.open("w") as log_file:
            return subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "--config", str(config)],
                stdout=log_file, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip

    proc = run(tmp_path / "1.log")
    try:
        assert wait_for(lambda: len(feed_server.seen("/a.xml")) == 1)
    finally:
        stop(proc)
    config.unlink()
    directory.rmdir()
    log_path = tmp_path / "2.log"
    proc = run(log_path)
    try:
        assert wait_for(lambda: "started on the one applied" in log_path.read_text(), 20)
        directory.mkdir()
        config.write_text(feeds_yaml(urls))
        assert wait_for(lambda: len(feed_server.seen("/b.xml")) == 1, 20), log_path.read_text()
    finally:
        code, _ = stop(proc)
    assert code == 0 and "Traceback" not in log_path.read_text(), log_path.read_text()
