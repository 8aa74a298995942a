"""`reelwatch run` killed with SIGKILL at random points of polling and sending, again and
again, then restarted: every item stored once, every relevant item one delivery, nothing
marked sent is sent again, at most one duplicate message per kill.

Alerts go to the console here (its ALERT lines, read from each process's output), not
to the Slack test server: Slack's pace of one message a second per channel would make
twenty rounds take minutes. The outbox is the same; test_service kills a run mid-send
to a real Slack API."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import text

from storage import Repository, make_engine
from tests.conftest import write_config
from tests.servers import FeedServer
from tests.test_service import wait_for

KILLS = 20
FEEDS = 6


def rss(feed: str, count: int) -> bytes:
    items = "".join(
        f"<item><guid>{feed}-{i}</guid><link>https://{feed}.example/{i}</link>"
        f"<title>Studio{feed}x{i} signs AI deal with Maker{feed}y{i}</title>"
        f"<description>Studio{feed}x{i} will use AI tools from Maker{feed}y{i}.</description>"
        "</item>"
        for i in range(count)
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>{feed}</title>{items}' \
        "</channel></rss>".encode()  # fmt: skip


def start(config: Path, log: Path) -> subprocess.Popen[str]:
    # a file, not a pipe: parse workers outlive a killed parent for a moment, pipe and all
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip


def alerts(output: str) -> Counter[str]:
    return Counter(
        line.split("ALERT ", 1)[1].split(" (")[0]
        for line in output.splitlines()
        if "ALERT " in line
    )


def test_twenty_kills_lose_nothing_and_repeat_at_most_one_message_each(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    rng = random.Random(7)
    served = dict.fromkeys((f"feed{n}" for n in range(FEEDS)), 0)
    urls = {feed: feed_server.add(f"/{feed}.xml", rss(feed, 0)) for feed in served}
    config = write_config(tmp_path, urls, interval="1m")
    repo = Repository(make_engine())
    repo.create_schema()
    sent_before_kill: dict[str, int] = {}  # title -> messages when it was marked sent
    calls: Counter[str] = Counter()
    for round_ in range(KILLS):
        for feed in rng.sample(sorted(served), 3):  # new items on some feeds
            served[feed] += rng.randint(1, 4)
            feed_server.add(f"/{feed}.xml", rss(feed, served[feed]))
        with repo.engine.begin() as conn:  # every feed is due again
            conn.execute(text("UPDATE feeds SET next_poll = NULL"))
        log = tmp_path / f"run{round_}.log"
        proc = start(config, log)
        time.sleep(rng.uniform(0.8, 3.0))  # start-up, polling, storing or sending
        proc.kill()
        proc.wait(timeout=10)
        calls += alerts(log.read_text())
        for record in repo.deliveries("sent"):
            sent_before_kill.setdefault(record.title, calls[record.title])

    with repo.engine.begin() as conn:
        conn.execute(text("UPDATE feeds SET next_poll = NULL"))
    log = tmp_path / "final.log"
    proc = start(config, log)
    try:
        total = sum(served.values())
        assert wait_for(lambda: repo.count_items() == total, 60)
        assert wait_for(lambda: repo.delivery_counts() == {"sent": total}, 60), (
            repo.delivery_counts()
        )
        # stopped once running (a SIGTERM before the handlers are set is the default death)
        assert wait_for(lambda: "service started" in log.read_text(), 30)
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
    out = log.read_text()
    assert code == 0, out
    calls += alerts(out)

    stored = [s.item.identity for s in repo.list_items(limit=None)]
    assert len(stored) == len(set(stored)) == sum(served.values())  # each stored once
    per_item = Counter(d.item_id for d in repo.deliveries(limit=100_000))
    assert set(per_item.values()) == {1}  # one delivery row per relevant item
    titles = {s.item.title for s in repo.list_items(limit=None)}
    assert set(calls) == titles  # every alert reached Slack
    for title, count in sent_before_kill.items():
        assert calls[title] == count, title  # marked sent, never sent again
    duplicates = sum(n - 1 for n in calls.values())
    assert duplicates <= KILLS, duplicates
