"""Pure decisions about feeds: when to poll next, how to back off, when to give up.

Like reader's Decider, nothing here reads a clock or touches storage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from monitor.types import FeedState, FeedUpdate, HealthNotice, PollOutcome

# A server may ask for a pause with Retry-After; more than a day is not a pause.
RETRY_AFTER_CAP = timedelta(hours=24)


def backoff(interval: timedelta, failures: int, cap: timedelta) -> timedelta:
    """interval x 2^failures, capped (but never below the interval itself)."""
    if failures <= 0:
        return interval
    return min(interval * (2 ** min(failures, 20)), max(cap, interval))


def gone_at(state: FeedState | None, url: str) -> bool:
    """Whether the feed answered 410 Gone at this url: not polled until it has a new one."""
    return state is not None and state.disabled and state.url == url


def is_due(state: FeedState | None, now: datetime, interval: timedelta | None = None) -> bool:
    """Due at the stored next poll; a healthy feed also one `interval` after its last
    attempt, so a shorter interval in an edited feeds.yaml takes effect at once."""
    if state is None:
        return True
    if state.disabled:
        return False
    if (
        interval is not None
        and not state.consecutive_failures
        and state.last_attempt is not None
        and state.last_attempt + interval <= now
    ):
        return True
    return state.next_poll is None or state.next_poll <= now


def decide_feed_update(
    prev: FeedState | None,
    outcome: PollOutcome,
    *,
    interval: timedelta,
    max_backoff: timedelta,
    now: datetime,
) -> FeedUpdate:
    failures_before = prev.consecutive_failures if prev else 0
    if outcome.kind in ("ok", "unchanged"):
        return FeedUpdate(
            last_status=outcome.kind,
            last_http_status=outcome.http_status,
            last_error=None,
            warning=outcome.warning,
            etag=outcome.etag,
            last_modified=outcome.last_modified,
            consecutive_failures=0,
            last_attempt=now,
            last_success=now,
            next_poll=now + interval,
            disabled=False,
            elapsed_ms=outcome.elapsed_ms,
            title=outcome.title or (prev.title if prev else None),
        )
    failures = failures_before + 1
    wait = backoff(interval, failures, max_backoff)
    if outcome.retry_after is not None:
        wait = max(wait, min(timedelta(seconds=outcome.retry_after), RETRY_AFTER_CAP))
    return FeedUpdate(
        last_status="gone" if outcome.gone else "failed",
        last_http_status=outcome.http_status,
        last_error=outcome.error,
        warning=None,
        etag=prev.etag if prev else None,
        last_modified=prev.last_modified if prev else None,
        consecutive_failures=failures,
        last_attempt=now,
        last_success=prev.last_success if prev else None,
        next_poll=None if outcome.gone else now + wait,
        disabled=outcome.gone,
        elapsed_ms=outcome.elapsed_ms,
        title=prev.title if prev else None,
    )


FAILING_FLAG_AFTER = timedelta(days=1)
NEVER_SUCCEEDED_AFTER = 5  # failures in a row before a feed that never worked is flagged
SILENT_MIN = timedelta(days=1)


def health_flags(
    state: FeedState | None,
    *,
    items_in_window: int,
    window: timedelta,
    last_new_item: datetime | None,
    now: datetime,
) -> list[str]:
    """What a user should look at: a feed failing for more than a day, or silent for
    much longer than its usual rhythm (five times its mean gap between new items)."""
    flags = []
    if state is None:
        return ["never polled"]
    if state.disabled:
        flags.append("disabled (gone)")
    elif state.consecutive_failures and (
        # never succeeded: we do not know since when, so several failures in a row
        # (with backoff, hours) make it a problem, not one blip on a new feed
        (state.last_success is None and state.consecutive_failures >= NEVER_SUCCEEDED_AFTER)
        or (state.last_success is not None and now - state.last_success > FAILING_FLAG_AFTER)
    ):
        if state.last_success is None:
            flags.append("failing (never succeeded)")
        else:
            flags.append(f"failing ({(now - state.last_success).days}d)")
    if last_new_item is not None and items_in_window >= 3:
        rhythm = window / items_in_window
        quiet = now - last_new_item
        if quiet > max(5 * rhythm, SILENT_MIN):
            flags.append(f"silent for {quiet.days}d (usually every {_human(rhythm)})")
    return flags


# the health flags worth a notice (not "never polled": a new feed is not a problem)
NOTICE_FLAGS = ("failing", "silent", "disabled")


def flag_kind(flag: str) -> str:
    """'failing (2d)' -> 'failing': what a flag is, without the numbers that change daily."""
    return flag.split(" ", 1)[0]


def decide_notices(
    flags: Mapping[str, Sequence[str]], noticed: Mapping[str, str]
) -> list[HealthNotice]:
    """One notice when a feed starts to need a look and one when it recovers, not one per
    check. `flags`: health_flags of the feeds judged now; `noticed`: the flag last noticed
    per feed. A feed not in `flags` keeps what was noticed."""
    out = []
    for feed, feed_flags in flags.items():
        problem = next((f for f in feed_flags if flag_kind(f) in NOTICE_FLAGS), None)
        kind = flag_kind(problem) if problem else None
        before = noticed.get(feed)
        if kind == before:
            continue
        if kind is None and before is not None:
            out.append(HealthNotice(feed, before, recovered=True))
        elif problem is not None and kind is not None:
            out.append(HealthNotice(feed, kind, problem))
    return out


def _human(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f}h" if hours < 48 else f"{hours / 24:.0f}d"
