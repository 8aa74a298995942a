"""Feed health notices: one when a feed needs a look, one when it recovers, none repeated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerts.notices import render_config_refused, render_health_notice
from alerts.slack import SlackBotSender
from monitor.config import parse_config
from monitor.decide import decide_notices
from monitor.health import check_health
from monitor.types import FeedUpdate, HealthNotice
from storage import Repository, make_engine
from tests.servers import SlackServer

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "notice, url, error, text",
    [
        (
            HealthNotice("thr", "failing", "failing (2d)"),
            "https://thr.example/feed",
            "server error (503 status code)",
            "Feed thr needs a look: failing (2d). Last error: server error (503 status code)",
        ),
        (
            HealthNotice("thr", "silent", "silent for 9d (usually every 7h)"),
            None,
            None,
            "Feed thr needs a look: silent for 9d (usually every 7h).",
        ),
        (HealthNotice("thr", "failing", recovered=True), None, None,
         "Feed thr recovered: it polls fine again."),
        (HealthNotice("thr", "silent", recovered=True), None, None,
         "Feed thr recovered: it has new items again."),
        (
            HealthNotice("x", "failing", "failing (1d)"),
            None,
            "<!channel> & *bold*",
            "Feed x needs a look: failing (1d). "
            "Last error: &lt;!channel&gt; &amp; *\u200dbold*\u200d",
        ),
    ],
)  # fmt: skip
def test_render_health_notice(
    notice: HealthNotice, url: str | None, error: str | None, text: str
) -> None:
    message = render_health_notice(notice, url=url, error=error)
    assert message.text == text
    body = message.blocks[0]["text"]["text"]
    assert ("<https://thr.example/feed|" in body) == (url is not None)
    assert "<!channel>" not in body


def test_render_config_refused_quotes_the_problems_inertly() -> None:
    problems = "feeds.yaml:3:15: feeds[0].interval: '<15 minutes>' is not a duration like 15m or 1h"
    message = render_config_refused(problems)
    body = message.blocks[0]["text"]["text"]
    assert "feeds.yaml:3:15: feeds[0].interval: '&lt;15 minutes&gt;' is not a duration" in body
    assert body.count("```") == 2
    assert "last good" in message.text and "feeds.yaml:3:15" in message.text


def test_a_refusal_at_start_says_which_copy_the_service_runs_on() -> None:
    problems = "feeds.yaml:3:15: feeds[0].interval: '15 minutes' is not a duration"
    message = render_config_refused(problems, datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    assert message.text.startswith(
        "feeds.yaml was refused at start; reelwatch runs on the one applied 2026-12-01 09:30 "
        "UTC until the file is fixed. feeds.yaml:3:15"
    )  # fmt: skip


@pytest.mark.parametrize(
    "flags, noticed, notices",
    [
        ({"a": []}, {}, []),
        ({"a": ["never polled"]}, {}, []),
        ({"a": ["failing (2d)"]}, {}, [HealthNotice("a", "failing", "failing (2d)")]),
        ({"a": ["failing (3d)"]}, {"a": "failing"}, []),  # the days go by: no new notice
        ({"a": []}, {"a": "failing"}, [HealthNotice("a", "failing", recovered=True)]),
        ({"a": ["silent for 6d (usually every 1d)"]}, {"a": "failing"},
         [HealthNotice("a", "silent", "silent for 6d (usually every 1d)")]),
        ({}, {"a": "failing"}, []),  # not judged this time: nothing changes
        ({"a": ["disabled (gone)"], "b": []}, {"b": "silent"},
         [HealthNotice("a", "disabled", "disabled (gone)"),
          HealthNotice("b", "silent", recovered=True)]),
    ],
)  # fmt: skip
def test_decide_notices(
    flags: dict[str, list[str]], noticed: dict[str, str], notices: list[HealthNotice]
) -> None:
    assert decide_notices(flags, noticed) == notices


def failing(now: datetime, last_success: datetime) -> FeedUpdate:
    return FeedUpdate(
        "failed", 503, "server error (503 status code)", None, None, None, 5, now, last_success,
        now + timedelta(minutes=30), False, 12,
    )  # fmt: skip


def ok(now: datetime) -> FeedUpdate:
    return FeedUpdate(
        "ok", 200, None, None, None, None, 0, now, now, now + timedelta(minutes=15), False, 9
    )


@pytest.fixture
def repo(database_url: str) -> Repository:
    r = Repository(make_engine(database_url))
    r.create_schema()
    return r


def test_a_failing_feed_gets_one_notice_and_one_recovery_notice(
    repo: Repository, database_url: str, slack_server: SlackServer
) -> None:
    config = parse_config(
        "feeds:\n  - name: thr\n    url: https://thr.example/feed\n"
        "  - name: fine\n    url: https://fine.example/feed\n"
    )
    sender = SlackBotSender(slack_server.token, slack_server.api_url)

    def check(now: datetime, since: datetime | None = None) -> list[HealthNotice]:
        return check_health(
            repo, config, lambda m: sender.send("#ai-news", m), now, judged_since=since
        )

    started = NOW - timedelta(days=2)
    repo.store_poll("fine", "https://fine.example/feed", ok(NOW), None, None, NOW)
    repo.store_poll("thr", "https://thr.example/feed", failing(NOW, started), None, None, NOW)
    assert check(NOW, since=NOW + timedelta(seconds=1)) == []  # not polled since the start
    assert check(NOW) == [HealthNotice("thr", "failing", "failing (2d)")]
    assert check(NOW + timedelta(minutes=5)) == []
    later = NOW + timedelta(days=1)
    repo.store_poll("thr", "https://thr.example/feed", failing(later, started), None, None, later)
    # a restart reads what was noticed: no repeat
    assert check_health(Repository(make_engine(database_url)), config, None, later) == []
    assert len(slack_server.calls) == 1
    assert slack_server.calls[0].payload["channel"] == "#ai-news"
    assert "Feed thr needs a look: failing (2d)" in slack_server.calls[0].payload["text"]

    back = later + timedelta(hours=1)
    repo.store_poll("thr", "https://thr.example/feed", ok(back), None, None, back)
    assert check(back) == [HealthNotice("thr", "failing", recovered=True)]
    assert check(back + timedelta(minutes=5)) == []
    assert len(slack_server.calls) == 2
    assert "Feed thr recovered" in slack_server.calls[1].payload["text"]
    assert repo.feed_notices() == {}


def test_a_notice_slack_did_not_take_is_sent_at_the_next_check(
    repo: Repository, slack_server: SlackServer
) -> None:
    config = parse_config("feeds:\n  - name: thr\n    url: https://thr.example/feed\n")
    sender = SlackBotSender(slack_server.token, slack_server.api_url)
    repo.store_poll(
        "thr", "https://thr.example/feed", failing(NOW, NOW - timedelta(days=3)), None, None, NOW
    )
    slack_server.fail_next(503)
    assert check_health(repo, config, lambda m: sender.send("#ai-news", m), NOW) == []
    assert repo.feed_notices() == {}
    later = NOW + timedelta(minutes=5)
    assert len(check_health(repo, config, lambda m: sender.send("#ai-news", m), later)) == 1
    assert repo.feed_notices() == {"thr": "failing"}
    assert len(slack_server.calls) == 1
