"""The outbox: deliveries are rows written with their items; this sends the due ones.

A delivery is marked sent only after Slack accepted it, so a crash between the
two re-sends at most the message in flight; a restart never re-sends what was
marked sent. Failures stay pending with their error and a next attempt time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from alerts.slack import SlackMessage, render_alert
from monitor.errors import DeliveryError
from storage.repo import Repository

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


def retry_delay(attempts: int, retry_after: float | None = None) -> timedelta:
    """30 s, 1 min, 2 min … capped at an hour; never sooner than Slack's Retry-After."""
    delay = min(RETRY_BASE * (2 ** min(attempts, 16)), RETRY_CAP)
    if retry_after is not None:
        delay = max(timedelta(seconds=retry_after), timedelta(seconds=1))
    return delay


def dispatch_pending(
    repo: Repository,
    sender_for: Callable[[str], Sender],
    now: datetime,
    *,
    limit: int = 200,
    feed_titles: dict[str, str] | None = None,
) -> DispatchReport:
    sent = retrying = failed = 0
    for delivery in repo.pending_deliveries(now, limit):
        item = delivery.stored.item
        message = render_alert(item, delivery.stored.matches, (feed_titles or {}).get(item.feed))
        try:
            sender_for(delivery.channel).send(delivery.channel, message)
        except DeliveryError as exc:
            if exc.permanent:
                failed += 1
                repo.mark_delivery_failed(delivery.id, str(exc))
                log.error(
                    "delivery failed delivery=%d channel=%s error=%r",
                    delivery.id,
                    delivery.channel,
                    str(exc),
                )
                continue
            retrying += 1
            when = now + retry_delay(delivery.attempts, exc.retry_after)
            repo.mark_delivery_retry(delivery.id, str(exc), when)
            log.warning(
                "delivery will be retried delivery=%d channel=%s at=%s error=%r",
                delivery.id, delivery.channel, when.isoformat(timespec="seconds"), str(exc),
            )  # fmt: skip
        except Exception as exc:  # one broken delivery must not stop the others
            retrying += 1
            repo.mark_delivery_retry(
                delivery.id, f"{type(exc).__name__}: {exc}", now + retry_delay(delivery.attempts)
            )
            log.exception("delivery crashed delivery=%d channel=%s", delivery.id, delivery.channel)
        else:
            sent += 1
            repo.mark_delivery_sent(delivery.id, now)
    return DispatchReport(sent, retrying, failed)
