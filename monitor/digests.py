"""From feeds.yaml and the feeds' state to what alerts.digest needs: plain values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from alerts.digest import DigestSetup
from monitor.config import Config
from monitor.decide import health_flags

HEALTH_WINDOW = timedelta(days=30)


def feed_health(config: Config, repo: Any, now: datetime) -> dict[str, list[str]]:
    """Enabled feeds that need attention (failing, silent, gone), with why."""
    states = repo.feed_states()
    activity = repo.feed_activity(now - HEALTH_WINDOW, now - timedelta(days=7))
    out = {}
    for feed in config.feeds:
        if not feed.enabled:
            continue
        act = activity.get(feed.name)
        flags = health_flags(
            states.get(feed.name),
            items_in_window=act.items_window if act else 0,
            window=HEALTH_WINDOW,
            last_new_item=act.last_new_item if act else None,
            now=now,
        )
        if flags:
            out[feed.name] = flags
    return out


def digest_setups(
    config: Config, health: Mapping[str, Sequence[str]], names: Sequence[str] | None = None
) -> list[DigestSetup]:
    labels = {tid: t.label for tid, t in config.topics.items() if not t.hidden}
    feeds_total = sum(1 for f in config.feeds if f.enabled)
    return [
        DigestSetup(
            name=name,
            to=tuple(d.to),
            topics=tuple(d.topics),
            schedule=d.schedule,
            timezone=d.timezone,
            subject=d.subject,
            language=d.language,
            topic_labels=labels,
            gate=config.gate(),
            health=health,
            feeds_total=feeds_total,
        )
        for name, d in config.digests.items()
        if names is None or name in names
    ]


def send_due_digests(
    repo: Any, config: Config, now: datetime, smtp: Any = None
) -> list[tuple[str, Any]]:
    """Send every digest whose period is owed (storage decides: missed ones too).
    Returns (digest name, DigestResult or the DeliveryError that stopped it)."""
    from alerts.digest import due_periods, run_digest
    from monitor.errors import DeliveryError

    if not config.digests:
        return []
    setups = digest_setups(config, feed_health(config, repo, now))
    out: list[tuple[str, Any]] = []
    for setup, period in due_periods(repo, setups, now):
        try:
            out.append((setup.name, run_digest(repo, setup, period, now=now, smtp=smtp)))
        except DeliveryError as exc:  # email not set up: say so, send the others
            out.append((setup.name, exc))
    return out
