"""Weekly digests: periods, content and safety as tables (pure); sending over real SMTP
(aiosmtpd on 127.0.0.1, with and without AUTH and STARTTLS), sent once, retried, never lost."""

from __future__ import annotations

import contextlib
import logging
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
import trustme
from sqlalchemy import event

import alerts.digest as digest_module
from alerts.digest import (
    GIVE_UP_AFTER,
    DigestSource,
    Period,
    build_digest,
    build_message,
    due_periods,
    header_safe,
    parse_period,
    period_before,
    render_digest,
    run_digest,
)
from monitor.cli import main
from monitor.config import load_config
from monitor.digests import digest_setups
from monitor.types import FeedUpdate, Item, Match, ParsedFeed
from storage import Repository, make_engine
from tests.servers import SlackServer
from tests.smtp import SmtpServer, free_port

# The week of Monday 16 Nov 2026 in Rome: Mon 08:00 (07:00 UTC) to the next Mon 08:00.
WEEK = Period(datetime(2026, 11, 16, 7, tzinfo=UTC), datetime(2026, 11, 23, 7, tzinfo=UTC))
IN_WEEK = datetime(2026, 11, 18, 10, tzinfo=UTC)
SENT_AT = datetime(2026, 11, 23, 7, 1, tzinfo=UTC)

HOSTILE = [
    "<script>alert('x')</script>Studio signs AI deal",
    '<img src=x onerror="alert(1)"> AI dubbing',
    "<form action='https://evil.example/'><input name=p></form> AI form",
    '<base href="https://evil.example/"> AI base',
    '<meta http-equiv="refresh" content="0;url=https://evil.example/"> AI refresh',
    "Subject line\r\nBcc: victim@evil.example AI header",
    "=?utf-8?q?=0D=0ABcc:_victim@evil.example?= AI encoded word",
]


# -- periods ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule, tz, now, period",
    [
        # Wednesday: the last complete week is Mon 16 08:00 -> Mon 23 08:00 Rome time
        ("0 8 * * mon", "Europe/Rome", datetime(2026, 11, 25, 12, tzinfo=UTC), WEEK),
        # on the Monday itself, just after 08:00, that week is complete
        ("0 8 * * mon", "Europe/Rome", datetime(2026, 11, 23, 7, 0, 30, tzinfo=UTC), WEEK),
        # the week in which the clocks went back (25 Oct 2026) has 169 hours
        ("0 8 * * mon", "Europe/Rome", datetime(2026, 10, 27, tzinfo=UTC),
         Period(datetime(2026, 10, 19, 6, tzinfo=UTC), datetime(2026, 10, 26, 7, tzinfo=UTC))),
        ("30 6 * * *", "UTC", datetime(2026, 11, 25, 6, 29, tzinfo=UTC),
         Period(datetime(2026, 11, 23, 6, 30, tzinfo=UTC),
                datetime(2026, 11, 24, 6, 30, tzinfo=UTC))),
    ],
)  # fmt: skip
def test_period_is_the_last_complete_scheduled_period(schedule, tz, now, period) -> None:
    assert period_before(schedule, tz, now) == period


def test_explicit_period_is_whole_days_in_the_digest_timezone() -> None:
    got = parse_period("2026-11-16..2026-11-22", "0 8 * * mon", "Europe/Rome", SENT_AT)
    assert got == Period(
        datetime(2026, 11, 15, 23, tzinfo=UTC), datetime(2026, 11, 22, 23, tzinfo=UTC)
    )
    for bad in ("yesterday", "2026-11-22..2026-11-16", "2026-13-01..2026-13-02"):
        with pytest.raises(ValueError):
            parse_period(bad, "0 8 * * mon", "UTC", SENT_AT)


# -- headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("AI in entertainment: week of 16 Nov", "AI in entertainment: week of 16 Nov"),
        ("Week\r\nBcc: victim@evil.example", "Week Bcc: victim@evil.example"),
        ("a\x00b\x1bc\u2028d", "a b c d"),
        ("=?utf-8?q?=0D=0ABcc:_x@evil.example?=", "= ?utf-8?q?=0D=0ABcc:_x@evil.example?="),
    ],
)
def test_header_safe_removes_line_breaks_controls_and_encoded_words(text, expected) -> None:
    assert header_safe(text) == expected


def test_no_header_injection_even_from_a_hostile_subject() -> None:
    msg = build_message(
        sender="reelwatch@example.org", recipients=["team@example.org"],
        subject="Hi\r\nBcc: victim@evil.example =?utf-8?q?=0D=0ABcc:_v@evil.example?=",
        text="t", html="<p>h</p>", now=SENT_AT,
    )  # fmt: skip
    raw = msg.as_bytes()
    assert b"\nBcc:" not in raw and b"=?utf-8?q?=0D" not in raw
    assert msg.get_all("Bcc") is None


# -- content ---------------------------------------------------------------------------------


def source(title: str, feed: str = "thr", url: str | None = None, score: float = 4.0,
           topics: tuple[str, ...] = ("ai_entertainment", "deals_partnerships"),
           summary: str = "A summary.") -> DigestSource:  # fmt: skip
    matches = tuple(Match(t, ("AI", "Runway"), score - i) for i, t in enumerate(topics))
    return DigestSource(feed, title, url, summary, "en", IN_WEEK, matches)


LABELS = {"ai_entertainment": "AI in entertainment", "deals_partnerships": "Deals",
          "labor_unions": "Unions", "music": "Music"}  # fmt: skip


def digest(sources, counts=None, previous=None, health=None, language="en"):
    return build_digest(
        name="weekly", language=language, timezone="Europe/Rome", period=WEEK,
        sources=sources, labels=LABELS, gate="ai_entertainment",
        counts=counts or {}, previous_counts=previous or {}, health=health or {}, feeds_total=22,
    )  # fmt: skip


def test_items_grouped_by_topic_ranked_and_counted_against_the_previous_period() -> None:
    d = digest(
        [
            source("Lionsgate signs with Runway for AI model", "thr", "https://thr.example/1"),
            source("Lionsgate signs with Runway for an AI model deal", "variety",
                   "https://variety.example/1", score=3.0),
            source("Lionsgate and Runway sign AI model agreement", "deadline", score=2.5),
            source("SAG-AFTRA strikes over AI voices", "deadline",
                   topics=("ai_entertainment", "labor_unions")),
            source("AI in film, generally", "indiewire", topics=("ai_entertainment",)),
        ],
        counts={"ai_entertainment": 5, "deals_partnerships": 3, "labor_unions": 1},
        previous={"ai_entertainment": 2, "deals_partnerships": 3},
    )  # fmt: skip
    assert (d.items, d.stories, d.outlets) == (5, 3, 4)
    (top,) = d.most_covered
    assert top.title.startswith("Lionsgate signs with Runway") and top.outlet == "thr"
    assert set(top.also) == {"variety", "deadline"} and top.languages == ("en",)
    assert [(s.label, len(s.entries)) for s in d.sections] == [
        ("Deals", 1), ("Unions", 1), ("Other stories", 1)
    ]  # fmt: skip
    flags = {c.topic: (c.count, c.previous, c.flag) for c in d.counts}
    assert flags == {"ai_entertainment": (5, 2, "doubled"), "deals_partnerships": (3, 3, None),
                     "labor_unions": (1, 0, None)}  # fmt: skip


def test_a_quiet_week_is_one_short_message() -> None:
    d = digest([], health={"thr-roma": ["failing (2d)"]})
    text, html = render_digest(d)
    assert "A quiet week" in text and "A quiet week" in html
    assert "1 of 22 feeds need attention: thr-roma (failing (2d))" in text
    assert "<table" not in html.split("quiet")[1]  # no empty topic table after the message


def test_labels_follow_the_digest_language() -> None:
    text, _ = render_digest(digest([source("Accordo Lionsgate-Runway sull'IA")], language="it"))
    assert "Periodo" in text and "perché" in text and "tutti i 22 feed funzionano" in text


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_hostile_feed_text_is_inert_in_the_html() -> None:
    sources = [source(t, f"feed{i}", url) for i, (t, url) in enumerate(zip(
        HOSTILE, ["javascript:alert(1)", "https://ok.example/a?x=1&y=2", "data:text/html,x",
                  'https://ok.example/"onmouseover="x', None, "https://ok.example/b", None],
        strict=True))]  # fmt: skip
    _, html = render_digest(digest(sources))
    parser = _Tags()
    parser.feed(html)
    names = [t for t, _ in parser.tags]
    assert not {"script", "form", "input", "base", "iframe", "img"} & set(names)
    assert not [a for t, a in parser.tags if t == "meta" and "http-equiv" in a]
    assert not [k for _, a in parser.tags for k in a if k.startswith("on")]
    hrefs = [a["href"] for t, a in parser.tags if t == "a"]
    assert hrefs == ["https://ok.example/a?x=1&y=2", "https://ok.example/b"]
    assert "&lt;script&gt;" in html  # shown as text, not dropped
    assert 'style="' in html  # CSS inlined for Gmail and Outlook


# -- sending over SMTP -----------------------------------------------------------------------


@pytest.fixture
def repo(database_url: str) -> Repository:
    r = Repository(make_engine(database_url))
    r.create_schema()
    return r


def seed(repo: Repository, titles: list[str], feed: str = "thr", when: datetime = IN_WEEK,
         topics: tuple[str, ...] = ("ai",)) -> None:  # fmt: skip
    batch = tuple(
        Item(feed, f"{feed}-{i}-{when:%s}", None, f"https://{feed}.example/{i}", t,
             "Summary of the story.", when, "en")
        for i, t in enumerate(titles)
    )  # fmt: skip
    matches = {i.identity: tuple(Match(t, ("AI",), 2.0) for t in topics) for i in batch}
    upd = FeedUpdate("ok", 200, None, None, None, None, 0, when, when, when, False, 5)
    repo.store_poll(feed, f"https://{feed}.example/rss", upd, ParsedFeed(feed, "en", batch,
                    matches), None, when)  # fmt: skip


def config_file(tmp_path: Path, to: str = "[team@example.org, boss@example.org]") -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(f"""\
feeds:
  - {{name: thr, url: "https://thr.example/rss"}}
topics:
  ai: {{label: AI in entertainment, query: AI}}
digests:
  weekly:
    to: {to}
    schedule: "0 8 * * mon"
    timezone: Europe/Rome
    subject: "AI in entertainment: week of {{start:%d %b}} ({{count}} stories)"
""")
    return path


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    server = SmtpServer()
    monkeypatch.setenv("REELWATCH_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("REELWATCH_SMTP_PORT", str(server.port))
    monkeypatch.setenv("REELWATCH_SMTP_FROM", "reelwatch@example.org")
    yield server
    server.close()


def setup_of(path: Path):
    (s,) = digest_setups(load_config(path), {})
    return s


def test_digest_is_delivered_as_text_and_html_and_sent_once(
    repo: Repository, smtp: SmtpServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(repo, ["Lionsgate signs AI deal with Runway", *HOSTILE])
    seed(repo, ["Old AI story"], when=WEEK.start - timedelta(days=1))  # the week before
    path = config_file(tmp_path)
    args = ["digest", "send", "weekly", "--config", str(path), "--period", "2026-11-16..2026-11-22"]
    assert main(args) == 0
    (got,) = smtp.received
    assert sorted(got.rcpt_tos) == ["boss@example.org", "team@example.org"]
    msg = got.message
    assert msg["Subject"] == "AI in entertainment: week of 16 Nov (8 stories)"
    assert msg.get_all("Bcc") is None and "evil" not in str(msg["To"])
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Lionsgate signs AI deal with Runway" in text and "Old AI story" not in text
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "8 stories" in text
    # a second send for the same period does nothing, and says so
    assert main(args) == 0
    assert "was sent on" in capsys.readouterr().out
    assert len(smtp.received) == 1
    assert main([*args, "--force"]) == 0
    assert len(smtp.received) == 2


def test_preview_writes_html_and_text_and_sends_nothing(
    repo: Repository, smtp: SmtpServer, tmp_path: Path
) -> None:
    seed(repo, ["Netflix uses generative AI in a series"])
    out = tmp_path / "digest.html"
    path = config_file(tmp_path)
    argv = ["digest", "preview", "weekly", "--config", str(path),
            "--period", "2026-11-16..2026-11-22", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "Netflix uses generative AI" in out.read_text()
    assert "Netflix uses generative AI" in out.with_suffix(".txt").read_text()
    assert main(["digest", "send", "weekly", "--config", str(path), "--dry-run"]) == 0
    assert smtp.received == []


def test_starttls_and_auth_and_the_password_never_printed(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = SmtpServer(login=("digest-bot", "s3cret-pw"), tls=server_ctx)
    try:
        env = {"REELWATCH_SMTP_HOST": "127.0.0.1", "REELWATCH_SMTP_PORT": str(server.port),
               "REELWATCH_SMTP_FROM": "reelwatch@example.org",
               "REELWATCH_SMTP_USER": "digest-bot", "REELWATCH_SMTP_PASSWORD": "wrong",
               "REELWATCH_SMTP_CA_FILE": str(ca_file)}  # fmt: skip
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        seed(repo, ["AI story"])
        argv = ["digest", "send", "weekly", "--config", str(config_file(tmp_path)),
                "--period", "2026-11-16..2026-11-22"]  # fmt: skip
        assert main(argv) == 1  # a wrong password is refused clearly, and kept owed
        err = capsys.readouterr().err
        assert "refused the login of user 'digest-bot'" in err and "wrong" not in err
        # owed, not failed: tried again until the password is corrected (it failed the
        # period at once, and every one after it until a person noticed)
        (owed,) = repo.owed_digests("weekly", datetime.now(UTC) + timedelta(days=1))
        assert owed.status == "retry"
        monkeypatch.setenv("REELWATCH_SMTP_PASSWORD", "s3cret-pw")
        assert main([*argv, "--force"]) == 0
        (got,) = server.received
        assert got.user == "digest-bot"
        assert "s3cret-pw" not in capsys.readouterr().out
    finally:
        server.close()


def test_one_recipient_refused_for_good_does_not_stop_the_others(
    repo: Repository, smtp: SmtpServer, tmp_path: Path
) -> None:
    smtp.refuse["boss@example.org"] = "550 5.1.1 No such user"
    seed(repo, ["AI story"])
    setup = setup_of(config_file(tmp_path))
    result = run_digest(repo, setup, WEEK, now=SENT_AT, smtp=None)
    assert result.status == "partial" and "550 5.1.1 No such user" in result.message
    (got,) = smtp.received
    assert got.rcpt_tos == ["team@example.org"]
    assert repo.digest_record("weekly", WEEK.start).status == "sent"


def test_a_temporary_refusal_is_retried_for_that_recipient_only(
    repo: Repository, smtp: SmtpServer, tmp_path: Path
) -> None:
    smtp.refuse["boss@example.org"] = "450 4.2.1 Mailbox busy"
    seed(repo, ["AI story"])
    setup = setup_of(config_file(tmp_path))
    first = run_digest(repo, setup, WEEK, now=SENT_AT, smtp=None)
    assert first.status == "retry"
    record = repo.digest_record("weekly", WEEK.start)
    assert record.pending == ("boss@example.org",) and record.next_attempt > SENT_AT
    smtp.refuse.clear()
    later = record.next_attempt + timedelta(seconds=1)
    assert [(s.name, p) for s, p in due_periods(repo, [setup], later)] == [("weekly", WEEK)]
    assert run_digest(repo, setup, WEEK, now=later, smtp=None).status == "sent"
    assert [r.rcpt_tos for r in smtp.received] == [["team@example.org"], ["boss@example.org"]]
    assert due_periods(repo, [setup], later) == []


def smtp_down(monkeypatch: pytest.MonkeyPatch) -> int:
    """The SMTP settings pointing at a port nothing listens on (connection refused)."""
    port = free_port()
    monkeypatch.setenv("REELWATCH_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("REELWATCH_SMTP_PORT", str(port))
    monkeypatch.setenv("REELWATCH_SMTP_FROM", "reelwatch@example.org")
    return port


@contextlib.contextmanager
def smtp_back(port: int) -> Iterator[list]:
    """A server on that port at last; yields the messages it receives."""
    from aiosmtpd.controller import Controller

    from tests.smtp import _Handler

    handler = _Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler.received
    finally:
        controller.stop()


def test_smtp_down_is_retried_with_backoff_and_sent_when_it_is_back(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = smtp_down(monkeypatch)
    seed(repo, ["AI story"])
    setup = setup_of(config_file(tmp_path))
    result = run_digest(repo, setup, WEEK, now=SENT_AT, smtp=None)
    assert result.status == "retry" and "cannot reach SMTP server 127.0.0.1" in result.message
    first_retry = repo.digest_record("weekly", WEEK.start).next_attempt
    assert due_periods(repo, [setup], SENT_AT) == []  # not before its time
    run_digest(repo, setup, WEEK, now=first_retry, smtp=None)
    second = repo.digest_record("weekly", WEEK.start)
    assert second.attempts == 2 and second.next_attempt - first_retry > first_retry - SENT_AT
    with smtp_back(port) as received:
        assert run_digest(repo, setup, WEEK, now=second.next_attempt, smtp=None).status == "sent"
        assert len(received) == 1


def test_a_retry_is_taken_by_the_check_that_runs_a_moment_before_it_falls_due(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the service checks once a minute; a retry promised one minute after a check falls
    # due a few milliseconds after the next one (its start drifts): taken by it, not a
    # minute later
    smtp_down(monkeypatch)
    seed(repo, ["AI story"])
    setup = setup_of(config_file(tmp_path))
    run_digest(repo, setup, WEEK, now=SENT_AT, smtp=None)
    retry_at = repo.digest_record("weekly", WEEK.start).next_attempt
    assert due_periods(repo, [setup], retry_at - timedelta(seconds=30)) == []
    assert due_periods(repo, [setup], retry_at - timedelta(milliseconds=3)) != []


def test_a_digest_whose_server_stays_down_is_retried_until_sent_even_a_period_later(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seven tries (~11 h) used to fail the digest for good, and once the next period
    began only that one was looked at: a weekend's SMTP outage dropped the week's digest."""
    port = smtp_down(monkeypatch)
    seed(repo, ["AI story"])
    setup = setup_of(config_file(tmp_path))
    now = SENT_AT
    for _ in range(10):
        assert run_digest(repo, setup, WEEK, now=now, smtp=None).status == "retry"
        now = repo.digest_record("weekly", WEEK.start).next_attempt
    assert now - SENT_AT > timedelta(hours=24)
    next_week = SENT_AT + timedelta(days=7, hours=1)  # the next period has ended too
    assert WEEK in [p for _, p in due_periods(repo, [setup], next_week)]
    with smtp_back(port) as received:
        assert run_digest(repo, setup, WEEK, now=next_week, smtp=None).status == "sent"
        assert len(received) == 1
    assert WEEK not in [p for _, p in due_periods(repo, [setup], next_week)]


def test_a_period_refused_with_4xx_for_two_weeks_is_given_up_and_logged_as_an_error(
    repo: Repository, smtp: SmtpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A recipient whose server answered 4xx for good kept the period in 'retry' forever."""
    smtp.refuse["boss@example.org"] = "450 4.2.1 Mailbox busy"
    seed(repo, ["AI story"])
    setup = setup_of(config_file(tmp_path))
    assert run_digest(repo, setup, WEEK, now=SENT_AT, smtp=None).status == "retry"
    # within the bound it is still owed and tried, however late
    late = WEEK.end + GIVE_UP_AFTER - timedelta(minutes=1)
    assert WEEK in [p for _, p in due_periods(repo, [setup], late)]
    assert run_digest(repo, setup, WEEK, now=late, smtp=None).status == "retry"
    after = repo.digest_record("weekly", WEEK.start).next_attempt
    assert after > WEEK.end + GIVE_UP_AFTER
    assert WEEK in [p for _, p in due_periods(repo, [setup], after)]
    smtp.refuse.clear()  # a try now would reach boss: none is made
    result = run_digest(repo, setup, WEEK, now=after, smtp=None)
    assert result.status == "failed"
    assert result.message == (
        "digest 'weekly' for 2026-11-16..2026-11-23 not sent: given up 14 days after the period"
        " ended, never sent to boss@example.org; last error: boss@example.org: 450 4.2.1"
        " Mailbox busy"
    )
    assert [r.rcpt_tos for r in smtp.received] == [["team@example.org"]]
    record = repo.digest_record("weekly", WEEK.start)
    assert record.status == "failed" and record.last_error in result.message
    (logged,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "period=2026-11-16" in logged.getMessage()
    assert "never sent to boss@example.org" in logged.getMessage()
    assert WEEK not in [p for _, p in due_periods(repo, [setup], after + timedelta(days=7))]


def test_every_owed_period_is_due_however_many_periods_came_after_it(
    repo: Repository, tmp_path: Path
) -> None:
    """due_periods looked back 20 records only: an hourly digest whose retry was still
    owed a day later was never sent again, nor given up."""
    setup = replace(setup_of(config_file(tmp_path)), schedule="0 * * * *", timezone="UTC")
    latest = period_before(setup.schedule, setup.timezone, SENT_AT)
    hour = timedelta(hours=1)
    periods = [Period(latest.start - n * hour, latest.end - n * hour) for n in range(30)]
    for p in periods:
        repo.claim_digest("weekly", p.start, p.end, p.end)
        repo.finish_digest("weekly", p.start, status="sent", now=p.end)
    oldest = periods[-1]  # a server answered 4xx: its retry is due now
    repo.finish_digest("weekly", oldest.start, status="retry", now=oldest.end,
                       pending=["boss@example.org"], error="boss@example.org: 450 busy",
                       next_attempt=SENT_AT - timedelta(minutes=1))  # fmt: skip
    assert [(s.name, p) for s, p in due_periods(repo, [setup], SENT_AT)] == [("weekly", oldest)]


def test_owed_periods_are_due_oldest_first(repo: Repository, tmp_path: Path) -> None:
    """The latest period came before an older one owed a retry: after an outage, readers
    got this week's digest before last week's."""
    setup = setup_of(config_file(tmp_path))
    seed(repo, ["AI story"])
    repo.claim_digest("weekly", WEEK.start, WEEK.end, SENT_AT)
    repo.finish_digest("weekly", WEEK.start, status="retry", now=SENT_AT,
                       pending=["boss@example.org"], error="boss@example.org: 450 busy",
                       next_attempt=SENT_AT + timedelta(hours=6))  # fmt: skip
    next_week = SENT_AT + timedelta(days=7)
    following = Period(WEEK.start + timedelta(days=7), WEEK.end + timedelta(days=7))
    assert [p for _, p in due_periods(repo, [setup], next_week)] == [WEEK, following]


def test_a_retry_goes_only_to_recipients_still_in_feeds_yaml(
    repo: Repository, smtp: SmtpServer, tmp_path: Path
) -> None:
    """A retry went to every recipient stored as pending, even after feeds.yaml lost them."""
    smtp.refuse.update({"boss@example.org": "450 4.2.1 Mailbox busy",
                        "carol@example.org": "450 4.2.1 Mailbox busy"})  # fmt: skip
    seed(repo, ["AI story"])
    everyone = "[team@example.org, boss@example.org, carol@example.org]"
    setup = setup_of(config_file(tmp_path, to=everyone))
    assert run_digest(repo, setup, WEEK, now=SENT_AT, smtp=None).status == "retry"
    later = repo.digest_record("weekly", WEEK.start).next_attempt
    smtp.refuse.clear()
    setup = setup_of(config_file(tmp_path, to="[team@example.org, carol@example.org]"))
    assert run_digest(repo, setup, WEEK, now=later, smtp=None).status == "sent"
    assert [r.rcpt_tos for r in smtp.received] == [["team@example.org"], ["carol@example.org"]]


def test_a_retry_whose_recipients_all_left_feeds_yaml_is_finished_unsent(
    repo: Repository, smtp: SmtpServer, tmp_path: Path
) -> None:
    smtp.refuse["boss@example.org"] = "450 4.2.1 Mailbox busy"
    seed(repo, ["AI story"])
    setup = setup_of(config_file(tmp_path))
    assert run_digest(repo, setup, WEEK, now=SENT_AT, smtp=None).status == "retry"
    later = repo.digest_record("weekly", WEEK.start).next_attempt
    smtp.refuse.clear()
    setup = setup_of(config_file(tmp_path, to="[team@example.org]"))
    result = run_digest(repo, setup, WEEK, now=later, smtp=None)
    assert result.status == "failed"
    assert result.message == (
        "digest 'weekly' for 2026-11-16..2026-11-23 not sent: no one to send it to:"
        " digests.weekly.to in feeds.yaml no longer lists boss@example.org, still owed it"
    )
    assert [r.rcpt_tos for r in smtp.received] == [["team@example.org"]]
    assert repo.digest_record("weekly", WEEK.start).status == "failed"
    assert due_periods(repo, [setup], later + timedelta(days=1)) == []


def test_a_period_being_sent_elsewhere_is_not_rendered(
    repo: Repository, smtp: SmtpServer, tmp_path: Path
) -> None:
    """A period left 'sending' (another worker, or a crash) was rendered every minute,
    items read and templates run, before claim_digest refused it."""
    seed(repo, ["AI story"])
    setup = setup_of(config_file(tmp_path))
    assert repo.claim_digest("weekly", WEEK.start, WEEK.end, SENT_AT) is not None
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    soon = SENT_AT + timedelta(minutes=10)
    event.listen(repo.engine, "before_cursor_execute", record)
    try:
        assert run_digest(repo, setup, WEEK, now=soon, smtp=None).status == "busy"
    finally:
        event.remove(repo.engine, "before_cursor_execute", record)
    assert statements and not [s for s in statements if re.search(r"\bFROM items\b", s)]
    assert due_periods(repo, [setup], soon) == []  # nor owed until it is an hour old
    assert_taken_again_after_an_hour(repo, smtp, setup)


def assert_taken_again_after_an_hour(repo: Repository, smtp: SmtpServer, setup) -> None:
    cut_off = SENT_AT + timedelta(hours=1)
    assert [p for _, p in due_periods(repo, [setup], cut_off)] == [WEEK]
    assert run_digest(repo, setup, WEEK, now=cut_off, smtp=None).status == "sent"
    assert len(smtp.received) == 1


def test_a_rendering_that_fails_after_the_claim_is_taken_again_an_hour_later(
    repo: Repository, smtp: SmtpServer, tmp_path: Path
) -> None:
    seed(repo, ["AI story"])
    setup = setup_of(config_file(tmp_path))
    with pytest.raises(KeyError):
        run_digest(repo, replace(setup, subject="{nope}"), WEEK, now=SENT_AT, smtp=None)
    assert due_periods(repo, [setup], SENT_AT + timedelta(minutes=30)) == []
    assert_taken_again_after_an_hour(repo, smtp, setup)


def test_a_missed_digest_is_owed_by_storage_not_by_the_scheduler(
    repo: Repository, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup = setup_of(config_file(tmp_path))
    # a fresh install owes nothing for weeks it was not running
    assert due_periods(repo, [setup], SENT_AT + timedelta(days=2)) == []
    seed(repo, ["AI story"])  # the service ran during the week, then was down on Monday
    after_restart = SENT_AT + timedelta(days=2)
    ((_, period),) = due_periods(repo, [setup], after_restart)
    assert period == WEEK
    assert run_digest(repo, setup, period, now=after_restart, smtp=None).status == "sent"
    assert due_periods(repo, [setup], after_restart) == []
    assert len(smtp.received) == 1


def test_the_service_sends_a_digest_missed_while_it_was_down(
    smtp: SmtpServer, tmp_path: Path, slack_server: SlackServer
) -> None:
    from tests.test_service import start, stop, wait_for

    repo = Repository(make_engine())
    repo.create_schema()
    period = period_before("0 6 * * *", "UTC", datetime.now(UTC))
    # the service ran during the last period (it stored an item), then was down when
    # the digest was due: it is sent as soon as the service is back
    seed(repo, ["Lionsgate signs an AI deal with Runway"], when=period.start + timedelta(hours=1))
    path = tmp_path / "feeds.yaml"
    path.write_text(
        'feeds: []\ntopics:\n  ai: {label: AI, query: AI}\nslack:\n  default_channel: "#ai-news"\n'
        'digests:\n  daily:\n    to: [team@example.org]\n    schedule: "0 6 * * *"\n'
    )
    proc = start(path, slack_server)
    try:
        assert wait_for(lambda: len(smtp.received) == 1, 30)
        assert wait_for(lambda: repo.digest_record("daily", period.start).status == "sent", 10)
    finally:
        code, out = stop(proc)
    assert code == 0, out
    # said once, with whom it went to
    sent = f"digest=daily period={period.start.date()} status=sent items=1 to=team@example.org"
    assert out.count("digest=daily") == 1 and sent in out, out
    assert (
        "Lionsgate signs an AI deal" in smtp.received[0].message.get_body(("plain",)).get_content()
    )
    # a restart does not send it again: the digests table remembers
    proc = start(path, slack_server)
    try:
        assert wait_for(lambda: repo.heartbeat("scheduler") is not None, 20)
        time.sleep(3)
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert len(smtp.received) == 1


def test_a_stored_story_is_one_entry_with_its_outlets_and_languages() -> None:
    def reported(title: str, feed: str, lang: str) -> DigestSource:
        return DigestSource(feed, title, None, "s", lang, IN_WEEK, (Match("ai_entertainment",
                            ("AI",), 3.0),), story=7)  # fmt: skip

    d = digest([reported("Lionsgate signs with Runway", "thr", "en"),
                reported("Lionsgate firma con Runway", "thr-roma", "it"),
                reported("Lionsgate y Runway se alían", "elpais-cultura", "es")])  # fmt: skip
    (top,) = d.most_covered
    assert d.stories == 1 and top.also == ("thr-roma", "elpais-cultura")
    assert top.languages == ("en", "it", "es")
    text, html = render_digest(d)
    assert "en, it, es" in text and "en, it, es" in html


def test_a_period_not_taken_says_why_and_what_to_do(
    repo: Repository, smtp: SmtpServer, tmp_path: Path
) -> None:
    """`digest send` for a period waiting for its retry, or failed for good, answered
    'is not due (or is being sent)': now when it is tried next, or the error, and --force."""
    setup = setup_of(config_file(tmp_path))
    repo.claim_digest("weekly", WEEK.start, WEEK.end, SENT_AT)
    later = SENT_AT + timedelta(hours=3)
    repo.finish_digest("weekly", WEEK.start, status="retry", now=SENT_AT,
                       pending=["boss@example.org"], error="boss@example.org: 450 busy",
                       next_attempt=later)  # fmt: skip
    result = run_digest(repo, setup, WEEK, now=SENT_AT, smtp=None)
    assert (result.status, result.message) == (
        "busy",
        f"digest 'weekly' for 2026-11-16..2026-11-23 waits for its next try at "
        f"{later:%Y-%m-%d %H:%M} UTC (last error: boss@example.org: 450 busy); "
        "--force sends it now",
    )
    repo.claim_digest("weekly", WEEK.start, WEEK.end, later)
    repo.finish_digest("weekly", WEEK.start, status="failed", now=later,
                       error="535 authentication failed")  # fmt: skip
    result = run_digest(repo, setup, WEEK, now=later, smtp=None)
    assert result.message == (
        "digest 'weekly' for 2026-11-16..2026-11-23 was not sent (last error: 535 "
        "authentication failed); --force sends it again"
    )
    assert smtp.received == []


def test_force_sends_a_waiting_period_to_those_it_still_owes(
    repo: Repository, smtp: SmtpServer, tmp_path: Path
) -> None:
    """--force, as the answer above suggests, for a period waiting for boss's server:
    it went to everyone again, team twice. And feeds.yaml's `Boss@Example.org` is boss."""
    smtp.refuse["boss@example.org"] = "450 4.2.1 Mailbox busy"
    seed(repo, ["AI story"])
    assert run_digest(repo, setup_of(config_file(tmp_path)), WEEK, now=SENT_AT,
                      smtp=None).status == "retry"  # fmt: skip
    smtp.refuse.clear()
    setup = setup_of(config_file(tmp_path, to="[team@example.org, Boss@Example.org]"))
    result = run_digest(repo, setup, WEEK, now=SENT_AT, smtp=None, force=True)
    assert result.status == "sent"
    assert [r.rcpt_tos for r in smtp.received] == [["team@example.org"], ["Boss@Example.org"]]


def test_a_forced_resend_cut_short_leaves_the_digest_sent(
    repo: Repository, smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`digest send --force` of a sent week, interrupted (Ctrl-C) while it rendered, left
    the week 'sending': the service sent it again an hour later, or past 14 days marked
    it 'failed, never sent'. Rendered first, an interrupted resend changes nothing."""
    seed(repo, ["AI story"])
    setup = setup_of(config_file(tmp_path))
    assert run_digest(repo, setup, WEEK, now=SENT_AT, smtp=None).status == "sent"

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    later = WEEK.end + timedelta(days=20)
    with monkeypatch.context() as m:
        m.setattr(digest_module, "render_period", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_digest(repo, setup, WEEK, now=later, smtp=None, force=True)
    record = repo.digest_record("weekly", WEEK.start)
    assert (record.status, record.sent_at) == ("sent", SENT_AT)
    assert WEEK not in [p for _, p in due_periods(repo, [setup], later + timedelta(hours=2))]
    # a forced resend that meets a 4xx, given up later: still sent, when it was
    smtp.refuse["boss@example.org"] = "450 4.2.1 Mailbox busy"
    assert run_digest(repo, setup, WEEK, now=later, smtp=None, force=True).status == "retry"
    retry_at = repo.digest_record("weekly", WEEK.start).next_attempt
    result = run_digest(repo, setup, WEEK, now=retry_at, smtp=None)
    assert result.status == "failed" and "a resend to boss@example.org was given up" in (
        result.message
    )
    record = repo.digest_record("weekly", WEEK.start)
    assert (record.status, record.sent_at) == ("sent", SENT_AT)
    assert WEEK not in [p for _, p in due_periods(repo, [setup], retry_at + timedelta(days=1))]


def test_force_reaches_the_recipients_feeds_yaml_lists_now(
    repo: Repository, smtp: SmtpServer, tmp_path: Path
) -> None:
    """boss's server said 4xx, then feeds.yaml replaced boss with boss2: the retry failed
    'no one to send it to', and --force (which the answer suggests) failed the same way,
    for ever: the period could not reach anyone feeds.yaml lists."""
    smtp.refuse["boss@example.org"] = "450 4.2.1 Mailbox busy"
    seed(repo, ["AI story"])
    assert run_digest(repo, setup_of(config_file(tmp_path)), WEEK, now=SENT_AT,
                      smtp=None).status == "retry"  # fmt: skip
    later = repo.digest_record("weekly", WEEK.start).next_attempt
    setup = setup_of(config_file(tmp_path, to="[team@example.org, boss2@example.org]"))
    assert run_digest(repo, setup, WEEK, now=later, smtp=None).status == "failed"
    assert run_digest(repo, setup, WEEK, now=later, smtp=None, force=True).status == "sent"
    assert [r.rcpt_tos for r in smtp.received][1:] == [["team@example.org", "boss2@example.org"]]


def test_a_forced_resend_refused_for_good_leaves_the_digest_sent(
    repo: Repository, smtp: SmtpServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A resend every recipient refused (550) turned the sent week into 'failed', and
    `digest send` then said it 'was not sent'; the CLI printed 'sent digest ... to ;'."""
    seed(repo, ["AI story"])
    setup = setup_of(config_file(tmp_path))
    assert run_digest(repo, setup, WEEK, now=SENT_AT, smtp=None).status == "sent"
    smtp.refuse.update({"boss@example.org": "550 no", "team@example.org": "550 no"})
    result = run_digest(repo, setup, WEEK, now=SENT_AT + timedelta(days=1), smtp=None, force=True)
    assert result.status == "failed" and "sent digest" not in result.message
    assert "(sent on 2026-11-23 07:01 UTC): a resend to its recipients failed" in result.message
    record = repo.digest_record("weekly", WEEK.start)
    assert (record.status, record.sent_at) == ("sent", SENT_AT)
    again = run_digest(repo, setup, WEEK, now=SENT_AT + timedelta(days=1), smtp=None)
    assert again.status == "already-sent"


def test_a_first_send_refused_for_good_by_everyone_says_not_sent(
    repo: Repository, smtp: SmtpServer, tmp_path: Path
) -> None:
    smtp.refuse.update({"boss@example.org": "550 no", "team@example.org": "550 no"})
    seed(repo, ["AI story"])
    result = run_digest(repo, setup_of(config_file(tmp_path)), WEEK, now=SENT_AT, smtp=None)
    assert result.status == "failed"
    assert result.message.startswith("digest 'weekly' for 2026-11-16..2026-11-23 not sent: "
                                     "refused for good: ")  # fmt: skip


def test_a_refusal_for_good_beside_a_temporary_one_is_logged_as_an_error(
    repo: Repository, smtp: SmtpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """carol 550 and boss 450: the warning said 'will retry', the retry reached boss and
    the record ended 'sent' with no error: carol's refusal was never an error line."""
    smtp.refuse.update({"boss@example.org": "450 busy", "carol@example.org": "550 no such user"})
    seed(repo, ["AI story"])
    setup = setup_of(config_file(tmp_path, to="[team@example.org, boss@example.org, "
                                              "carol@example.org]"))  # fmt: skip
    assert run_digest(repo, setup, WEEK, now=SENT_AT, smtp=None).status == "retry"
    (logged,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "refused for good: carol@example.org: 550 no such user" in logged


def test_force_does_not_take_a_period_another_process_is_sending(
    repo: Repository, smtp: SmtpServer, tmp_path: Path
) -> None:
    """The service had claimed the week and was sending it: --force sent it as well."""
    seed(repo, ["AI story"])
    setup = setup_of(config_file(tmp_path))
    repo.claim_digest("weekly", WEEK.start, WEEK.end, SENT_AT)
    soon = SENT_AT + timedelta(minutes=1)
    result = run_digest(repo, setup, WEEK, now=soon, smtp=None, force=True)
    assert result.status == "busy" and "not even with --force" in result.message
    assert smtp.received == []
    # a claim an hour old is a send that stopped: --force takes it
    later = SENT_AT + timedelta(hours=1)
    assert run_digest(repo, setup, WEEK, now=later, smtp=None, force=True).status == "sent"


def test_a_forced_send_past_the_give_up_bound_does_not_promise_a_retry(
    repo: Repository, smtp: SmtpServer, tmp_path: Path
) -> None:
    """--force 20 days on met a 4xx: 'retrying at ...', but that retry gave up untried."""
    smtp.refuse["boss@example.org"] = "450 greylisted"
    seed(repo, ["AI story"])
    setup = setup_of(config_file(tmp_path, to="[boss@example.org]"))
    late = WEEK.end + timedelta(days=20)
    result = run_digest(repo, setup, WEEK, now=late, smtp=None, force=True)
    assert result.status == "retry" and "retrying at" not in result.message
    assert "given up at" in result.message and "--force tries again" in result.message


def test_a_dry_run_names_whom_a_send_would_reach(
    repo: Repository, smtp: SmtpServer, tmp_path: Path
) -> None:
    smtp.refuse["boss@example.org"] = "450 busy"
    seed(repo, ["AI story"])
    setup = setup_of(config_file(tmp_path))
    run_digest(repo, setup, WEEK, now=SENT_AT, smtp=None)
    result = run_digest(repo, setup, WEEK, now=SENT_AT, smtp=None, dry_run=True)
    assert " to boss@example.org; nothing sent" in result.message
