"""The outbox: deliveries are rows written with their items; this sends the due ones.

A delivery is marked sent only after Slack accepted it, so a crash between the
two re-sends at most the message in flight; a restart never re-sends what was
marked sent. Failures stay pending with their error and a next attempt time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from alerts.slack import SlackMessage, render_alert, render_summary
from monitor.errors import DeliveryError
from storage.repo import PendingDelivery, Repository

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=1)


class Sender(Protocol):
    def send(self, channel: str, message: SlackMessage) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class DispatchReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0

    def __add__(self, other: DispatchReport) -> DispatchReport:
        return DispatchReport(
            self.sent + other.sent, self.retrying + other.retrying, self.failed + other.failed
        )


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
) -> DispatchReport:
    """Send what is due: one message per delivery, or one summary for a channel that
    has more than `burst` due at once (a flood trains people to mute the channel)."""
    pacer = pacer or Pacer()
    titles = feed_titles or {}
    by_channel: dict[str, list[PendingDelivery]] = {}
    for delivery in repo.pending_deliveries(now, limit):
        by_channel.setdefault(delivery.channel, []).append(delivery)
    report = DispatchReport()
    for channel, deliveries in by_channel.items():
        if len(deliveries) > burst and channel != "console":
            stories = [(d.stored.item, d.stored.matches) for d in deliveries]
            message = render_summary(stories, titles)
            report += _send(repo, sender_for, pacer, channel, message, deliveries, now)
            continue
        for d in deliveries:
            message = render_alert(d.stored.item, d.stored.matches, titles.get(d.stored.item.feed))
            report += _send(repo, sender_for, pacer, channel, message, [d], now)
    return report


def _send(
    repo: Repository,
    sender_for: Callable[[str], Sender],
    pacer: Pacer,
    channel: str,
    message: SlackMessage,
    deliveries: list[PendingDelivery],
    now: datetime,
) -> DispatchReport:
    try:
        pacer.wait(channel)
        sender_for(channel).send(channel, message)
    except DeliveryError as exc:
        for d in deliveries:
            if exc.permanent:
                repo.mark_delivery_failed(d.id, str(exc))
            else:
                repo.mark_delivery_retry(
                    d.id, str(exc), now + retry_delay(d.attempts, exc.retry_after)
                )
        if exc.permanent:
            log.error(
                "delivery failed channel=%s deliveries=%d error=%r",
                channel,
                len(deliveries),
                str(exc),
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
    return DispatchReport(sent=len(deliveries))
