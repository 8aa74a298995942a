"""Slack delivery: routing, pacing, bursts, rate limits, and `reelwatch slack test`."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerts.outbox import Pacer, dispatch_all, dispatch_pending
from alerts.routing import Route, Router
from alerts.slack import SlackSettings
from monitor.cli import main
from monitor.types import FeedUpdate, Item, Match, ParsedFeed
from storage import Repository, make_engine
from tests.servers import SlackServer

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def m(topic: str, score: float = 2.0) -> Match:
    return Match(topic, ("AI",), score)


ROUTER = Router(
    routes=(
        Route(frozenset({"labor_unions", "law_regulation"}), frozenset(), "#policy", 0.0),
        Route(frozenset({"music"}), frozenset({"billboard"}), "#music", 2.0),
        Route(frozenset({"zebra"}), frozenset(), "#zoo", 0.0),
    ),
    default_channel="#ai-news",
    transport="bot",
)


@pytest.mark.parametrize(
    "feed, matches, channels",
    [
        ("thr", [m("ai_entertainment")], ["#ai-news"]),
        ("thr", [m("ai_entertainment"), m("labor_unions")], ["#policy"]),
        ("thr", [m("ai_entertainment"), m("labor_unions"), m("law_regulation")], ["#policy"]),
        ("billboard", [m("ai_entertainment"), m("music", 2)], ["#music"]),
        ("billboard", [m("ai_entertainment"), m("music", 1)], ["#ai-news"]),  # below min_score
        ("variety", [m("ai_entertainment"), m("music")], ["#ai-news"]),  # not from billboard
        ("thr", [m("zebra")], ["#zoo"]),  # a topic of one's own
        ("billboard", [m("music"), m("labor_unions")], ["#policy", "#music"]),
        ("thr", [], []),
    ],
)
def test_routing(feed: str, matches: list[Match], channels: list[str]) -> None:
    assert ROUTER.channels(feed, matches) == channels


def test_webhook_and_console_have_one_channel() -> None:
    webhook = Router(ROUTER.routes, "webhook", transport="webhook")
    assert webhook.channels("billboard", [m("music"), m("labor_unions")]) == ["webhook"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds


def test_pacer_keeps_one_message_per_second_per_channel() -> None:
    clock = FakeClock()
    pacer = Pacer(1.0, clock, clock.sleep)
    for channel in ["#a", "#a", "#b", "#a", "console", "console"]:
        pacer.wait(channel)
        clock.now += 0.1
    assert clock.slept == [0.9, 0.8]  # the second #a waits; #b and the console never do


def store(repo: Repository, n: int, router: Router, first: int = 0) -> None:
    items = tuple(
        Item(
            "thr",
            f"g{i}",
            None,
            f"https://thr.example/{i}",
            f"Studio{i} signs deal number{i} <!channel>",
            "s",
            NOW,
            "en",
        )
        for i in range(first, first + n)
    )
    matches = {i.identity: (m("ai_entertainment"),) for i in items}
    update = FeedUpdate("ok", 200, None, None, None, None, 0, NOW, NOW, NOW, False, 1)
    repo.store_poll("thr", "u", update, ParsedFeed("THR", "en", items, matches), router, NOW)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    r = Repository(make_engine(f"sqlite:///{tmp_path}/r.db"))
    r.create_schema()
    return r


def bot(slack_server: SlackServer) -> SlackSettings:
    return SlackSettings(None, slack_server.token, slack_server.api_url)


def test_a_burst_becomes_one_summary(repo: Repository, slack_server: SlackServer) -> None:
    store(repo, 12, Router(default_channel="#ai-news", transport="bot"))
    report = dispatch_pending(repo, bot(slack_server).sender_for, NOW, burst=10)
    assert report.sent == 12
    (call,) = slack_server.calls
    assert call.payload["text"].startswith("12 new stories")
    assert len(call.payload["blocks"]) <= 50
    assert "<!channel>" not in json.dumps(call.payload)
    assert repo.delivery_counts() == {"sent": 12}


def test_poll_sends_everything_due_a_batch_at_a_time(
    repo: Repository, slack_server: SlackServer
) -> None:
    store(repo, 5, Router(default_channel="#ai-news", transport="bot"))
    sender_for = bot(slack_server).sender_for
    report = dispatch_all(repo, sender_for, NOW, batch=2, burst=10, pacer=Pacer(interval=0))
    assert report.sent == 5 and len(slack_server.calls) == 5
    assert repo.delivery_counts() == {"sent": 5}
    assert len({c.payload["text"] for c in slack_server.calls}) == 5  # each item once


def test_a_batch_of_failures_ends_the_dispatch_and_stays_pending(
    repo: Repository, slack_server: SlackServer
) -> None:
    store(repo, 3, Router(default_channel="#ai-news", transport="bot"))
    for _ in range(3):
        slack_server.fail_next(
            429, b'{"ok": false, "error": "ratelimited"}',
            {"Content-Type": "application/json", "Retry-After": "30"},
        )  # fmt: skip
    # the failed ones are due again only later: the dispatch ends, it does not spin
    report = dispatch_all(repo, bot(slack_server).sender_for, NOW, batch=2, pacer=Pacer(0))
    assert report.retrying == 3 and report.sent == 0
    assert repo.delivery_counts() == {"pending": 3}


def test_429_waits_for_retry_after_from_the_outbox(
    repo: Repository, slack_server: SlackServer
) -> None:
    store(repo, 1, Router(default_channel="#ai-news", transport="bot"))
    slack_server.fail_next(
        429, b'{"ok": false, "error": "ratelimited"}',
        {"Content-Type": "application/json", "Retry-After": "30"},
    )  # fmt: skip
    report = dispatch_pending(repo, bot(slack_server).sender_for, NOW)
    assert report.retrying == 1
    (pending,) = repo.deliveries("pending")
    assert pending.next_attempt == NOW + timedelta(seconds=30)
    assert "rate limited" in pending.last_error
    assert (
        dispatch_pending(repo, bot(slack_server).sender_for, NOW + timedelta(seconds=29)).sent == 0
    )
    assert (
        dispatch_pending(repo, bot(slack_server).sender_for, NOW + timedelta(seconds=30)).sent == 1
    )
    assert len(slack_server.calls) == 1


def test_not_in_channel_is_permanent_and_said_plainly(
    repo: Repository, slack_server: SlackServer
) -> None:
    store(repo, 1, Router(default_channel="#private", transport="bot"))
    assert dispatch_pending(repo, bot(slack_server).sender_for, NOW).failed == 1
    (failed,) = repo.deliveries("failed")
    assert "invite it with /invite" in failed.last_error


def test_a_429_pauses_the_channel_for_the_rest_of_the_pass(
    repo: Repository, slack_server: SlackServer
) -> None:
    """After a 429 each other alert of the pass asked again at once: 4 calls into the
    rate limit instead of 1."""
    store(repo, 4, Router(default_channel="#ai-news", transport="bot"))
    slack_server.fail_next(
        429, b'{"ok": false, "error": "ratelimited"}',
        {"Content-Type": "application/json", "Retry-After": "40"},
    )  # fmt: skip
    report = dispatch_pending(repo, bot(slack_server).sender_for, NOW, pacer=Pacer(interval=0))
    # the 429 was the one request: another would have been answered, and recorded
    assert report.retrying == 4 and slack_server.failures == [] and slack_server.calls == []
    assert {d.next_attempt for d in repo.deliveries("pending")} == {NOW + timedelta(seconds=40)}
    later = NOW + timedelta(seconds=40)
    assert dispatch_pending(repo, bot(slack_server).sender_for, later, pacer=Pacer(0)).sent == 4
    assert len(slack_server.calls) == 4


def test_failed_alerts_are_sent_again_once_the_cause_is_fixed(
    repo: Repository, slack_server: SlackServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A mistyped default_channel failed its alerts for good, with no way to send them
    once feeds.yaml was fixed."""
    store(repo, 2, Router(default_channel="#ai-newz", transport="bot"))
    assert dispatch_pending(repo, bot(slack_server).sender_for, NOW).failed == 2
    monkeypatch.setenv("REELWATCH_DATABASE_URL", f"sqlite:///{tmp_path}/r.db")
    config = tmp_path / "feeds.yaml"
    config.write_text('feeds: []\nslack:\n  default_channel: "#ai-news"\n')
    argv = ["deliveries", "--config", str(config), "--retry", "--to-channel", "#ai-news"]
    assert main(argv) == 0
    assert "2 failed alert(s) queued again" in capsys.readouterr().out
    soon = datetime.now(UTC) + timedelta(seconds=1)  # queued again as of now
    report = dispatch_pending(repo, bot(slack_server).sender_for, soon)
    assert report.sent == 2
    assert [c.payload["channel"] for c in slack_server.calls] == ["#ai-news", "#ai-news"]
    assert main(argv) == 0
    assert capsys.readouterr().out == "no failed alerts: nothing to send again\n"
    # ids that are not failed (sent now) are named as such, not counted as queued
    assert main([*argv[:3], "--retry", "1", "2"]) == 0
    assert "2 of the alerts 1, 2 not queued: not failed" in capsys.readouterr().out


@pytest.mark.parametrize("transport", ["bot", "webhook"])
def test_a_refused_token_fails_the_pass_with_one_request(
    repo: Repository, slack_server: SlackServer, transport: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A wrong or revoked token (or webhook) is refused alike in every channel: the first
    refusal fails the pass's other alerts too, not one request and one log line each."""
    from alerts.routing import Route

    routes = tuple(Route(frozenset(), frozenset(), c, 0.0) for c in ("#ai-news", "#policy"))
    store(repo, 3, Router(routes=routes, default_channel=None, transport=transport))
    if transport == "bot":
        slack = SlackSettings(None, "xoxb-revoked", slack_server.api_url)
        why = "the bot token is invalid (REELWATCH_SLACK_BOT_TOKEN) (invalid_auth)"
        channels = {"#ai-news", "#policy"}  # 3 items in each
    else:
        slack = SlackSettings(f"{slack_server.base}/services/T0/B0/revoked", None,
                              slack_server.api_url)  # fmt: skip
        slack_server.fail_next(404, b"no_service")
        why = "the webhook was revoked or deleted (404 no_service)"
        channels = {"webhook"}  # the one channel a webhook posts to
    report = dispatch_pending(repo, slack.sender_for, NOW, pacer=Pacer(interval=0))
    assert (report.sent, report.failed) == (0, 3 * len(channels))
    assert len(slack_server.attempts) == 1
    failed = repo.deliveries("failed")
    assert {d.channel for d in failed} == channels
    assert all(why in (d.last_error or "") for d in failed), [d.last_error for d in failed]
    assert caplog.text.count("delivery failed") == 1
    assert "the other alerts due now fail alike, unsent" in caplog.text


def test_a_refused_token_leaves_the_webhooks_alerts_to_be_sent(
    repo: Repository, slack_server: SlackServer
) -> None:
    """Alerts queued for the webhook before a bot token was set go out with the webhook,
    the others with the token: one refused fails its own alerts, never the other's."""
    from alerts.routing import Route

    route = Route(frozenset(), frozenset(), "#ai-news", 0.0)
    store(repo, 2, Router(routes=(route,), default_channel=None, transport="bot"))
    store(repo, 2, Router(routes=(route,), default_channel=None, transport="webhook"), first=2)
    slack = SlackSettings(f"{slack_server.base}/services/T0/B0/X", "xoxb-revoked",
                          slack_server.api_url)  # fmt: skip
    report = dispatch_pending(repo, slack.sender_for, NOW, pacer=Pacer(interval=0))
    assert (report.sent, report.failed) == (2, 2)
    by_channel = {(d.channel, d.status) for d in repo.deliveries()}
    assert by_channel == {("webhook", "sent"), ("#ai-news", "failed")}
    assert len(slack_server.attempts) == 3  # one refusal, two webhook posts


def test_an_item_failed_in_two_channels_is_sent_once_to_the_new_one(
    repo: Repository, slack_server: SlackServer
) -> None:
    """Both deliveries of an item moved to one channel broke the (item, channel) key:
    an IntegrityError, nothing queued."""
    from alerts.routing import Route

    routes = tuple(Route(frozenset(), frozenset(), c, 0.0) for c in ("#gone-a", "#gone-b"))
    store(repo, 1, Router(routes=routes, default_channel=None, transport="bot"))
    assert dispatch_pending(repo, bot(slack_server).sender_for, NOW).failed == 2
    assert repo.retry_failed_deliveries(None, NOW, channel="#ai-news") == 1
    assert dispatch_pending(repo, bot(slack_server).sender_for, NOW).sent == 1
    assert sorted(d.status for d in repo.deliveries()) == ["failed", "sent"]


def test_a_token_with_a_line_break_is_said_plainly_and_never_shown(
    config: Path, slack_server: SlackServer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """http.client refused the header with the token in its message: a traceback that
    printed the secret (and stored it as the delivery's last error)."""
    monkeypatch.setenv("REELWATCH_SLACK_API_URL", slack_server.api_url)
    monkeypatch.setenv("REELWATCH_SLACK_BOT_TOKEN", f"{slack_server.token}\r\nSECRETPART")
    assert cli(config) == 1
    out = capsys.readouterr()
    assert "line break" in out.err
    assert "SECRETPART" not in out.err + out.out and "Traceback" not in out.err


def cli(config: Path, *args: str) -> int:
    return main(["slack", "test", "--config", str(config), *args])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text('feeds: []\nslack:\n  default_channel: "#ai-news"\n')
    return path


def test_slack_test_reports_in_plain_words(
    config: Path, slack_server: SlackServer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert cli(config) == 1
    assert "Slack is not set up" in capsys.readouterr().err
    monkeypatch.setenv("REELWATCH_SLACK_API_URL", slack_server.api_url)
    monkeypatch.setenv("REELWATCH_SLACK_BOT_TOKEN", "xoxb-wrong")
    assert cli(config) == 1
    assert (
        "the bot token is invalid (REELWATCH_SLACK_BOT_TOKEN) (invalid_auth)"
        in capsys.readouterr().err
    )
    monkeypatch.setenv("REELWATCH_SLACK_BOT_TOKEN", slack_server.token)
    assert cli(config, "--channel", "#nowhere") == 1
    assert "channel not found" in capsys.readouterr().err
    assert cli(config, "--channel", "#private") == 1
    assert "not in this channel" in capsys.readouterr().err
    assert cli(config) == 0
    assert "ok: Slack accepted the test message in #ai-news" in capsys.readouterr().out
    assert slack_server.calls[-1].payload["channel"] == "#ai-news"


def test_slack_test_through_a_webhook(
    config: Path, slack_server: SlackServer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("REELWATCH_SLACK_WEBHOOK_URL", slack_server.webhook_url)
    slack_server.fail_next(404, b"no_service", {"Content-Type": "text/plain"})
    assert cli(config) == 1
    err = capsys.readouterr().err
    assert "revoked or deleted" in err and slack_server.webhook_url not in err  # a secret
    assert cli(config) == 0


def test_a_quoted_webhook_url_fails_once_and_is_never_shown(
    repo: Repository, slack_server: SlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    """docker's --env-file keeps quotes: slack-sdk refuses '"https://…"' with the URL in
    its exception (and logged it): a secret in the logs, and a retry forever."""
    from monitor.cli import setup_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    setup_logging("text", "info")  # as the service sets it up, and caplog to read it
    root.addHandler(caplog.handler)
    store(repo, 1, Router(default_channel="webhook", transport="webhook"))
    quoted = f'"{slack_server.webhook_url}"'
    settings = SlackSettings(webhook_url=quoted, bot_token=None, api_url=slack_server.api_url)
    try:
        assert dispatch_pending(repo, settings.sender_for, NOW).failed == 1
    finally:
        root.handlers[:] = handlers  # the other tests' logging as it was
        root.setLevel(level)
        logging.getLogger("slack_sdk").setLevel(logging.NOTSET)
    assert "delivery failed channel=webhook" in caplog.text
    (failed,) = repo.deliveries("failed")
    assert "REELWATCH_SLACK_WEBHOOK_URL is not an https:// URL" in failed.last_error
    assert "services/T000" not in failed.last_error + caplog.text
    assert slack_server.calls == []


def test_a_connection_reset_is_retried_later_and_sent_once(
    repo: Repository, slack_server: SlackServer
) -> None:
    store(repo, 1, Router(default_channel="#ai-news", transport="bot"))
    slack_server.failures.append("reset")
    assert dispatch_pending(repo, bot(slack_server).sender_for, NOW).retrying == 1
    assert len(slack_server.attempts) == 1  # slack-sdk did not retry behind the outbox's back
    (pending,) = repo.deliveries("pending")
    assert "cannot reach Slack" in pending.last_error
    later = NOW + timedelta(minutes=1)
    assert dispatch_pending(repo, bot(slack_server).sender_for, later).sent == 1
    assert len(slack_server.calls) == 1


def test_slack_receives_exactly_this_json(repo: Repository, slack_server: SlackServer) -> None:
    title = "<!here> Lionsgate *signs* <@U1>"
    url = "https://thr.example/a?x=1&y=2"
    item = Item("thr", "g", None, url, title, "Deal & <b>more</b>", NOW, "en")
    update = FeedUpdate("ok", 200, None, None, None, None, 0, NOW, NOW, NOW, False, 1)
    parsed = ParsedFeed("THR", "en", (item,), {"g": (Match("ai_entertainment", ("AI",), 2.0),)})
    router = Router(default_channel="#ai-news", transport="bot")
    repo.store_poll("thr", "u", update, parsed, router, NOW)
    dispatch_pending(repo, bot(slack_server).sender_for, NOW)
    (call,) = slack_server.calls
    zwj = "\u200d"
    title = f"&lt;!here&gt; Lionsgate *{zwj}signs*{zwj} &lt;@U1&gt;"
    assert call.payload == {
        "channel": "#ai-news",
        "text": f"{title} (thr · en) https://thr.example/a?x=1&y=2 [`ai_entertainment`]",
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"*<https://thr.example/a?x=1&y=2|{title}>*\n"
                    "Deal &amp; &lt;b&gt;more&lt;/b&gt;",
                },
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": "thr · en · 25 Nov 2026 12:00 UTC"},
                    {"type": "mrkdwn", "text": "Topics: `ai_entertainment` · why: AI"},
                ],
            },
        ],
        "unfurl_links": False,
        "unfurl_media": False,
    }
