"""Several `reelwatch run --worker` processes on one PostgreSQL share the feeds and the
outbox with no coordinator: each feed is polled by one worker, a killed worker's feeds
are taken over when its lease runs out, nothing is stored or sent twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from sqlalchemy import text

from storage import Repository, make_engine
from tests.servers import FeedServer, SlackServer, late
from tests.test_service import wait_for

FEEDS = 12
SLOW = {"feed00", "feed01", "feed02"}  # answer after a while: a worker is killed meanwhile


def rss(feed: str) -> bytes:
    items = "".join(
        f"<item><guid>{feed}-{i}</guid><link>https://{feed}.example/{i}</link>"
        f"<title>Studio{feed}x{i} signs AI deal with Maker{feed}y{i}</title>"
        f"<description>Studio{feed}x{i} will use AI tools from Maker{feed}y{i}.</description>"
        "</item>"
        for i in range(2)
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>{feed}</title>{items}' \
        "</channel></rss>".encode()  # fmt: skip


def start_worker(config: Path, url: str, slack: SlackServer) -> subprocess.Popen[str]:
    env = dict(os.environ) | {
        "REELWATCH_DATABASE_URL": url,
        "REELWATCH_SLACK_BOT_TOKEN": slack.token,
        "REELWATCH_SLACK_API_URL": slack.api_url,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", "run", "--worker", "--config", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_workers_share_the_feeds_and_a_killed_worker_loses_nothing(
    postgres_cluster, feed_server: FeedServer, slack_server: SlackServer, tmp_path: Path
) -> None:
    url = postgres_cluster.new_database()
    lines = ["defaults:", "  interval: 15m", "  timeout: 2s", "feeds:"]
    for n in range(FEEDS):
        feed = f"feed{n:02}"
        body = rss(feed)
        path = f"/{feed}.xml"
        route = feed_server.add(path, body, handler=late(body, 1.5) if feed in SLOW else None)
        lines += [f"  - name: {feed}", f"    url: {route}"]
    lines += [
        "topics:",
        "  ai: {label: AI, query: AI}",
        "slack:",
        '  default_channel: "#ai-news"',
        "  burst: 1000",
    ]
    config = tmp_path / "feeds.yaml"
    config.write_text("\n".join(lines) + "\n")
    repo = Repository(make_engine(url))
    repo.create_schema()
    workers = [start_worker(config, url, slack_server) for _ in range(3)]
    killed = None
    try:
        # kill the worker holding a slow feed while it waits for the answer
        def holder() -> str | None:
            with repo.engine.connect() as conn:
                return conn.execute(
                    text("SELECT leased_by FROM feeds WHERE name = ANY(:n) AND leased_by IS NOT "
                         "NULL LIMIT 1"), {"n": sorted(SLOW)}
                ).scalar()  # fmt: skip

        assert wait_for(lambda: holder() is not None, 30)
        pid = int(holder().rsplit(":", 1)[1])
        killed = next(w for w in workers if w.pid == pid)
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)

        def all_polled() -> bool:
            states = repo.feed_states()
            return len(states) == FEEDS and all(s.last_status == "ok" for s in states.values())

        assert wait_for(all_polled, 60), repo.feed_states()
        assert wait_for(lambda: repo.delivery_counts() == {"sent": FEEDS * 2}, 60), (
            repo.delivery_counts()
        )
    finally:
        outs = []
        for w in workers:
            if w is not killed:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            if w is not killed:
                try:
                    outs.append(w.communicate(timeout=20)[0])
                except subprocess.TimeoutExpired:  # never leave a worker behind
                    w.kill()
                    outs.append(w.communicate()[0])
    assert all(w.returncode == 0 for w in workers if w is not killed), outs
    # every item stored once, every alert sent once
    assert repo.count_items() == FEEDS * 2
    titles = Counter(c.payload["text"].split(" (")[0] for c in slack_server.calls)
    assert len(titles) == FEEDS * 2 and max(titles.values()) == 1
    # a feed is polled by one worker: only a slow feed the killed worker held twice
    polls = Counter(r.path for r in feed_server.requests)
    assert all(polls[f"/feed{n:02}.xml"] == 1 for n in range(FEEDS) if f"feed{n:02}" not in SLOW)
    assert all(polls[f"/{f}.xml"] <= 2 for f in SLOW)
    assert repo.heartbeat("scheduler") is not None  # one of them held the scheduling role


def test_worker_mode_needs_postgresql(tmp_path: Path) -> None:
    config = tmp_path / "feeds.yaml"
    config.write_text("feeds: []\n")
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "run", "--worker", "--config", str(config)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and "need PostgreSQL" in done.stderr
