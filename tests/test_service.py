"""`reelwatch run` as a user starts it: a real process, real feeds, a real Slack API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from monitor.cli import main
from storage import Repository, make_engine
from tests.conftest import fixture, write_config
from tests.servers import FeedServer, SlackServer


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def start(config: Path, slack: SlackServer) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env |= {"REELWATCH_SLACK_BOT_TOKEN": slack.token, "REELWATCH_SLACK_API_URL": slack.api_url}
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:  # never leave a service behind: the test fails
        proc.kill()
        out = proc.communicate()[0] + "\n(did not stop within 20 s of SIGTERM: killed)"
    return proc.returncode, out


def test_run_polls_alerts_refuses_a_second_run_and_stops_cleanly(
    feed_server: FeedServer, slack_server: SlackServer, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path,
        {
            "ars": feed_server.add("/ars.xml", fixture("arstechnica_2024-04-01_rss2.xml")),
            "down": feed_server.add("/down", b"", status=503, conditional=False),
        },
        extra='slack:\n  default_channel: "#ai-news"\n',
    )
    repo = Repository(make_engine())
    proc = start(config, slack_server)
    try:
        assert wait_for(lambda: len(slack_server.calls) >= 5), "no alerts reached Slack"
        assert wait_for(lambda: (repo.feed_state("down") or None) is not None)
        assert repo.feed_state("down").last_error.startswith("server error (503")

        second = subprocess.run(
            [sys.executable, "-m", "monitor", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        assert "already using" in second.stderr

        assert main(["health", "--config", str(config)]) == 0
    finally:
        code, out = stop(proc)
    assert code == 0, out
    sent = len(slack_server.calls)
    assert sent == sum(1 for s in repo.list_items(limit=None) if s.matches)
    time.sleep(1.1)
    assert main(["health", "--config", str(config), "--max-age", "1s"]) == 1

    # a restart re-sends nothing and does not poll feeds before they are due
    requests_before = len(feed_server.seen("/ars.xml"))
    proc = start(config, slack_server)
    try:
        assert wait_for(
            lambda: (
                repo.heartbeat("scheduler") is not None
                and main(["health", "--config", str(config), "--max-age", "2s"]) == 0
            )
        )
        time.sleep(2)
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert len(slack_server.calls) == sent
    assert len(feed_server.seen("/ars.xml")) == requests_before


def test_sigkill_mid_dispatch_loses_nothing_and_repeats_at_most_one(
    feed_server: FeedServer, slack_server: SlackServer, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path,
        {"ars": feed_server.add("/ars.xml", fixture("arstechnica_2024-04-01_rss2.xml"))},
        extra='slack:\n  default_channel: "#ai-news"\n',
    )
    slack_server.delay = 0.3  # Slack is slow: the kill lands while a message is in flight
    proc = start(config, slack_server)
    try:
        assert wait_for(lambda: len(slack_server.attempts) >= 2)
    finally:
        proc.kill()  # SIGKILL: no clean-up of any kind
        proc.wait(timeout=10)
    repo = Repository(make_engine())
    relevant = {s.item.title for s in repo.list_items(limit=None) if s.matches}
    assert len(relevant) == 5
    assert repo.delivery_counts().get("pending", 0) >= 1  # killed before it finished

    proc = start(config, slack_server)
    try:
        assert wait_for(lambda: repo.delivery_counts() == {"sent": 5})
    finally:
        code, out = stop(proc)
    assert code == 0, out
    delivered = [c.payload["text"] for c in slack_server.calls]
    assert {t for t in relevant if any(t in d for d in delivered)} == relevant  # none lost
    assert len(delivered) - len(set(delivered)) <= 1  # at most the one in flight repeated


def test_sigterm_while_starting_is_a_clean_exit(tmp_path: Path, slack_server: SlackServer) -> None:
    config = write_config(tmp_path, {"thr": "http://127.0.0.1:9/feed"})
    proc = start(config, slack_server)
    time.sleep(0.6)  # importing, opening the database: the service's handlers are not set
    code, out = stop(proc)
    assert code == 0, out
