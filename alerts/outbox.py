"""The outbox: deliveries are rows written with their items; this sends the due ones.

A delivery is marked sent only after Slack accepted it, so a crash between the
two re-sends at most the message in flight; a restart never re-sends what was
marked sent. Failures stay pending with their error and a next attempt time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from alerts.slack import (
    SlackMessage,
    credential_of,
    render_alert,
    render_followup,
    render_summary,
)
from monitor.errors import DeliveryError
from storage.types import DELIVERY_LEASE, PendingDelivery, StoryInfo

if TYPE_CHECKING:
    from storage.repo import Repository

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=1)
WAIT_FOR_LEAD = timedelta(seconds=20)  # a reply waits for its story's alert to be sent


class Sender(Protocol):
    def send(self, channel: str, message: SlackMessage) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class DispatchReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    waiting: int = 0  # later reports of a story whose alert is not sent yet: due shortly

    def __add__(self, other: DispatchReport) -> DispatchReport:
        return DispatchReport(
            self.sent + other.sent, self.retrying + other.retrying, self.failed + other.failed,
            self.waiting + other.waiting,
        )  # fmt: skip

    @property
    def total(self) -> int:
        """Deliveries this dispatch dealt with: each due one it read is counted once."""
        return self.sent + self.retrying + self.failed + self.waiting


def retry_delay(attempts: int, retry_after: float | None = None) -> timedelta:
    """30 s, 1 min, 2 min … capped at an hour; never sooner than Slack's Retry-After."""
    delay = min(RETRY_BASE * (2 ** min(attempts, 16)), RETRY_CAP)
    if retry_after is not None:
        delay = max(timedelta(seconds=retry_after), timedelta(seconds=1))
    return delay


class Pacer:
    """At most one message per `interval` seconds per Slack channel (Slack's limit).

    Kept by the caller across dispatch passes; waiting happens in the dispatching
    thread, never on the event loop.
    """

    def __init__(
        self,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        self._last: dict[str, float] = {}

    def wait(self, channel: str) -> None:
        if channel == "console":
            return
        last = self._last.get(channel)
        if last is not None:
            delay = last + self.interval - self._clock()
            if delay > 0:
                self._sleep(delay)
        self._last[channel] = self._clock()


def dispatch_pending(
    repo: Repository,
    sender_for: Callable[[str], Sender],
    now: datetime,
    *,
    limit: int = 200,
    burst: int = 10,
    pacer: Pacer | None = None,
    feed_titles: dict[str, str] | None = None,
    stopping: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
) -> DispatchReport:
    """Send what is due: one message per delivery, or one summary for a channel that
    has more than `burst` due at once (a flood trains people to mute the channel)."""
    pacer = pacer or Pacer()
    titles = feed_titles or {}
    pending = repo.pending_deliveries(now, limit)
    claims = _Claims(repo, pending, now, clock)
    stories = repo.story_of([d.stored.id for d in pending])
    by_channel: dict[str, list[PendingDelivery]] = {}
    for delivery in pending:
        by_channel.setdefault(delivery.channel, []).append(delivery)
    report = DispatchReport()
    for channel, deliveries in by_channel.items():
        # A story alerts once per channel: its later reports reply in the alert's thread.
        leads = [d for d in deliveries if _leads(stories.get(d.stored.id))]
        followers = [d for d in deliveries if not _leads(stories.get(d.stored.id))]
        if len(leads) > burst and channel != "console":
            leads = claims.keep(leads)
            if leads:
                items = [(d.stored.item, d.stored.matches) for d in leads]
                message = render_summary(items, titles)
                # not the stories' message: a later report of one of them alerts on its
                # own, never replies under (or rewrites) a summary of many
                report += _send(repo, sender_for, pacer, channel, message, leads, now,
                                claims=claims)  # fmt: skip
        else:
            for d in leads:
                if stopping():  # a shutdown: the rest stay pending (their claim runs out)
                    return report
                message = render_alert(
                    d.stored.item, d.stored.matches, titles.get(d.stored.item.feed)
                )
                report += _send(repo, sender_for, pacer, channel, message, [d], now,
                                stories=[stories.get(d.stored.id)], claims=claims)  # fmt: skip
        if followers and _threads(sender_for, channel) is False:
            # where Slack cannot thread (webhook, console), a story's alert stands for its
            # later reports: nothing to send, marked in one go (a first poll has thousands)
            repo.mark_deliveries_merged([d.id for d in followers], now)
            report += DispatchReport(sent=len(followers))
            followers = []
        for d in followers:
            if stopping():
                return report
            report += _follow_up(repo, sender_for, pacer, channel, d, stories[d.stored.id],
                                 now, titles, claims)  # fmt: skip
    return report


def dispatch_all(
    repo: Repository,
    sender_for: Callable[[str], Sender],
    now: datetime,
    *,
    batch: int = 200,
    burst: int = 10,
    pacer: Pacer | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> DispatchReport:
    """Everything due, `batch` deliveries at a time, as `reelwatch poll` sends before it
    exits: a first poll of many feeds finds thousands (left for the next poll, they would
    be its work), and one batch's items and stories are all that is held at once. Each
    batch is a dispatch as the service makes them: a channel's burst is summarised per
    batch. It ends: what fails or waits is due again only after `now`."""
    pacer = pacer or Pacer()  # one for all batches: a channel's pace carries across them

    def drain(at: datetime) -> DispatchReport:
        report = DispatchReport()
        while True:
            done = dispatch_pending(repo, sender_for, at, limit=batch, burst=burst, pacer=pacer,
                                    stopping=stopping)  # fmt: skip
            report += done
            if done.total < batch or stopping():  # a short batch was the last
                return report

    first = drain(now)
    if not first.waiting:
        return first
    # Later reports read in a batch before their story's alert waited for it: it has
    # been sent since (or failed, and they alert in its place).
    again = drain(now + WAIT_FOR_LEAD)
    return replace(first + again, waiting=again.waiting)


class _Claims:
    """A dispatch pass's claim on its deliveries (DELIVERY_LEASE from when they were
    taken). A pass can outlast it (a slow Slack, many follow-ups at a message a second),
    and another worker then takes what is left: before a send, once a third of the lease
    has run, the claim is renewed for all the pass's deliveries at once, and one lost is
    left to its new owner. A short pass costs no statement."""

    def __init__(
        self, repo: Repository, pending: Sequence[PendingDelivery], now: datetime,
        clock: Callable[[], float],
    ) -> None:  # fmt: skip
        self._repo, self._pending, self._now, self._clock = repo, pending, now, clock
        self._since = clock()
        self._lost: set[int] = set()
        # channel -> when Slack's Retry-After ends: the pass sends nothing more there
        self.paused: dict[str, datetime] = {}
        # credential -> Slack's refusal of it in this pass: nothing more is sent with it
        self.refused: dict[str, DeliveryError] = {}

    def keep(self, deliveries: list[PendingDelivery]) -> list[PendingDelivery]:
        # a third: what follows a check (the pace, a send and a coverage update, 30 s
        # timeouts each) ends well within the lease
        if self._clock() - self._since > DELIVERY_LEASE.total_seconds() / 3:
            held = self._repo.hold_deliveries(self._pending, self._now)
            self._lost |= {d.id for d in self._pending} - held
            self._since = self._clock()
        return [d for d in deliveries if d.id not in self._lost]


def _threads(sender_for: Callable[[str], Sender], channel: str) -> bool | None:
    """Whether the channel's sender replies in threads; None when it has no sender."""
    try:
        return bool(getattr(sender_for(channel), "threads", False))
    except DeliveryError:
        return None


def _leads(story: StoryInfo | None) -> bool:
    return story is None or story.is_lead


def _follow_up(
    repo: Repository,
    sender_for: Callable[[str], Sender],
    pacer: Pacer,
    channel: str,
    d: PendingDelivery,
    story: StoryInfo,
    now: datetime,
    titles: dict[str, str],
    claims: _Claims,
) -> DispatchReport:
    """A later report of a story: a reply under its alert, and the alert's coverage updated."""
    try:
        sender = sender_for(channel)
    except DeliveryError as exc:
        repo.mark_delivery_retry(d.id, str(exc), now + retry_delay(d.attempts))
        return DispatchReport(retrying=1)
    parent = repo.story_message(story.story_id, channel)
    if parent is None:
        if repo.delivery_status(story.lead_item_id, channel) == "pending":
            repo.mark_delivery_retry(d.id, "waiting for the story's alert", now + WAIT_FOR_LEAD)
            return DispatchReport(waiting=1)
        # the story's alert never reached this channel (another route, a summary of
        # many, or it failed): this report alerts in its place
        message = render_alert(d.stored.item, d.stored.matches, titles.get(d.stored.item.feed))
        return _send(repo, sender_for, pacer, channel, message, [d], now, stories=[story],
                     claims=claims)  # fmt: skip
    channel_id, ts = parent
    reply = render_followup(d.stored.item, titles.get(d.stored.item.feed))
    result = _send(repo, sender_for, pacer, channel, reply, [d], now, thread_ts=ts,
                   claims=claims)  # fmt: skip
    if result.sent:
        _update_coverage(repo, sender, pacer, channel, channel_id, ts, story, titles)
    return result


def _update_coverage(
    repo: Repository, sender: Any, pacer: Pacer, channel: str, channel_id: str, ts: str,
    story: StoryInfo, titles: dict[str, str],
) -> None:  # fmt: skip
    fresh = repo.story_of([story.lead_item_id]).get(story.lead_item_id)
    lead = repo.stored_items([story.lead_item_id]).get(story.lead_item_id)
    if fresh is None or lead is None:
        return
    also = [titles.get(o, o) for o in fresh.outlets if o != lead.item.feed]
    message = render_alert(lead.item, lead.matches, titles.get(lead.item.feed), also=also)
    try:
        pacer.wait(channel)
        sender.update(channel_id, ts, message)
    except Exception as exc:  # the reply is sent; a stale count is not worth a retry
        log.warning("coverage update failed channel=%s story=%d error=%r", channel,
                    story.story_id, str(exc))  # fmt: skip


def _send(
    repo: Repository,
    sender_for: Callable[[str], Sender],
    pacer: Pacer,
    channel: str,
    message: SlackMessage,
    deliveries: list[PendingDelivery],
    now: datetime,
    *,
    stories: Sequence[StoryInfo | None] = (),
    thread_ts: str | None = None,
    claims: _Claims,
) -> DispatchReport:
    deliveries = claims.keep(deliveries)
    if not deliveries:  # another worker took them: it sends them
        return DispatchReport()
    refused = claims.refused.get(credential_of(channel))
    if refused is not None:
        # Slack refused this token or webhook in this pass: every channel sent with it
        # would answer the same, so the rest fail alike, not one request (and log) each
        for d in deliveries:
            repo.mark_delivery_failed(d.id, str(refused))
        return DispatchReport(failed=len(deliveries))
    until = claims.paused.get(channel)
    if until is not None:  # a 429 in this pass: wait as Slack said, without asking again
        for d in deliveries:
            repo.mark_delivery_retry(d.id, "rate limited by Slack (429)", until)
        return DispatchReport(retrying=len(deliveries))
    try:
        pacer.wait(channel)
        sender = sender_for(channel)
        if thread_ts is not None:
            response = sender.send(channel, message, thread_ts=thread_ts)
        else:
            response = sender.send(channel, message)
    except DeliveryError as exc:
        if exc.retry_after is not None:
            claims.paused[channel] = now + retry_delay(0, exc.retry_after)
        for d in deliveries:
            if exc.permanent:
                repo.mark_delivery_failed(d.id, str(exc))
            else:
                repo.mark_delivery_retry(
                    d.id, str(exc), now + retry_delay(d.attempts, exc.retry_after)
                )
        credential = credential_of(channel)
        if exc.credentials:
            claims.refused[credential] = exc
        if exc.permanent:
            log.error(
                "delivery failed channel=%s deliveries=%d error=%r: kept; once it is fixed, "
                "`reelwatch deliveries --retry` sends them%s",
                channel,
                len(deliveries),
                str(exc),
                f" (the other alerts due now fail alike, unsent: those sent with the {credential}"
                f"{' token' if credential == 'bot' else ''})"
                if exc.credentials
                else "",
            )
            return DispatchReport(failed=len(deliveries))
        log.warning(
            "delivery will be retried channel=%s deliveries=%d error=%r",
            channel,
            len(deliveries),
            str(exc),
        )
        return DispatchReport(retrying=len(deliveries))
    except Exception as exc:  # one broken delivery must not stop the others
        for d in deliveries:
            repo.mark_delivery_retry(
                d.id, f"{type(exc).__name__}: {exc}", now + retry_delay(d.attempts)
            )
        log.exception("delivery crashed channel=%s", channel)
        return DispatchReport(retrying=len(deliveries))
    for d in deliveries:
        repo.mark_delivery_sent(d.id, now)
    ts, channel_id = response.get("ts"), response.get("channel")
    if ts and channel_id:  # the story's message in this channel: its replies go under it
        for story in {s.story_id for s in stories if s is not None}:
            repo.save_story_message(story, channel, str(channel_id), str(ts))
    return DispatchReport(sent=len(deliveries))
