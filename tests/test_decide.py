from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monitor.decide import backoff, decide_feed_update, health_flags, is_due
from monitor.types import FeedState, PollOutcome

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
IV = timedelta(minutes=15)
CAP = timedelta(hours=6)


@pytest.mark.parametrize(
    "failures, wait",
    [(0, IV), (1, 2 * IV), (2, 4 * IV), (3, 8 * IV), (5, CAP), (50, CAP)],
)
def test_backoff_doubles_up_to_the_cap(failures: int, wait: timedelta) -> None:
    assert backoff(IV, failures, CAP) == wait


def decide(prev: FeedState | None, outcome: PollOutcome):
    return decide_feed_update(prev, outcome, interval=IV, max_backoff=CAP, now=NOW)


def test_success_resets_failures_and_schedules_the_next_interval() -> None:
    prev = FeedState("f", "u", consecutive_failures=3, last_error="boom")
    u = decide(prev, PollOutcome("ok", 10, 200, etag='"e"', last_modified="lm"))
    assert (u.consecutive_failures, u.last_error, u.next_poll) == (0, None, NOW + IV)
    assert u.last_success == NOW and u.etag == '"e"'


def test_failure_keeps_validators_and_backs_off() -> None:
    prev = FeedState("f", "u", etag='"e"', last_modified="lm", consecutive_failures=1,
                     last_success=NOW - timedelta(hours=1))  # fmt: skip
    u = decide(prev, PollOutcome("failed", 10, 500, error="server error (500 status code)"))
    assert u.consecutive_failures == 2 and u.next_poll == NOW + 4 * IV
    assert (u.etag, u.last_modified) == ('"e"', "lm")
    assert u.last_success == prev.last_success and u.last_error.startswith("server error")


@pytest.mark.parametrize(
    "retry_after, wait",
    [(3600.0, timedelta(hours=1)), (10.0, 2 * IV), (10 * 86400.0, timedelta(hours=24))],
)
def test_retry_after_is_honoured_and_capped(retry_after: float, wait: timedelta) -> None:
    u = decide(None, PollOutcome("failed", 1, 429, error="rate limited", retry_after=retry_after))
    assert u.next_poll == NOW + wait


def test_gone_disables_the_feed() -> None:
    u = decide(None, PollOutcome("failed", 1, 410, error="gone", gone=True))
    assert u.disabled and u.next_poll is None and u.last_status == "gone"
    assert not is_due(FeedState("f", "u", disabled=True), NOW)


@pytest.mark.parametrize(
    "state, due",
    [
        (None, True),
        (FeedState("f", "u", next_poll=NOW - timedelta(seconds=1)), True),
        (FeedState("f", "u", next_poll=NOW + timedelta(seconds=1)), False),
    ],
)
def test_is_due(state: FeedState | None, due: bool) -> None:
    assert is_due(state, NOW) is due


DAY = timedelta(days=1)


@pytest.mark.parametrize(
    "state, items, last_new, flags",
    [
        (None, 0, None, ["never polled"]),
        (FeedState("f", "u", last_success=NOW - timedelta(hours=1)), 30, NOW - DAY, []),
        (  # failing for two days
            FeedState("f", "u", consecutive_failures=9, last_success=NOW - 2 * DAY),
            30, NOW - 2 * DAY, ["failing (2d)"],
        ),
        (  # failing for an hour: not yet worth a flag
            FeedState("f", "u", consecutive_failures=1, last_success=NOW - timedelta(hours=1)),
            30, NOW - DAY, [],
        ),
        (  # 60 items in 30 days (every 12h), nothing for 4 days
            FeedState("f", "u", last_success=NOW), 60, NOW - 4 * DAY,
            ["silent for 4d (usually every 12h)"],
        ),
        (  # a weekly feed quiet for 4 days is normal
            FeedState("f", "u", last_success=NOW), 4, NOW - 4 * DAY, [],
        ),
        (FeedState("f", "u", disabled=True), 0, None, ["disabled (gone)"]),
        (  # a new feed that failed once: not yet (a blip must not notify anyone)
            FeedState("f", "u", consecutive_failures=1), 0, None, [],
        ),
        (  # never worked, five times in a row: flagged
            FeedState("f", "u", consecutive_failures=5), 0, None, ["failing (never succeeded)"],
        ),
    ],
)  # fmt: skip
def test_health_flags(state, items: int, last_new, flags: list[str]) -> None:
    got = health_flags(state, items_in_window=items, window=30 * DAY, last_new_item=last_new,
                       now=NOW)  # fmt: skip
    assert got == flags


@pytest.mark.parametrize(
    "failures, due",
    [(0, True), (2, False)],  # a backing-off feed keeps its backoff
)
def test_a_shorter_interval_makes_a_healthy_feed_due_at_once(failures: int, due: bool) -> None:
    state = FeedState("f", "u", consecutive_failures=failures, last_attempt=NOW,
                      next_poll=NOW + timedelta(hours=6))  # fmt: skip
    later = NOW + timedelta(minutes=2)
    assert is_due(state, later) is False
    assert is_due(state, later, interval=timedelta(minutes=1)) is due
