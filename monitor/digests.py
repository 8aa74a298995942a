"""From feeds.yaml and the feeds' state to what alerts.digest needs: plain values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from alerts.digest import DigestSetup
from monitor.config import Config
from monitor.health import feed_health


def flagged_feeds(config: Config, repo: Any, now: datetime) -> dict[str, list[str]]:
    """Enabled feeds that need attention (failing, silent, gone), with why."""
    return {name: h.flags for name, h in feed_health(config, repo, now).items() if h.flags}


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

    # checked every minute: the feeds' health is read only when a digest is owed
    due = due_periods(repo, digest_setups(config, {}), now)
    if not due:
        return []
    health = flagged_feeds(config, repo, now)
    out: list[tuple[str, Any]] = []
    for setup, period in due:
        setup = replace(setup, health=health)
        try:
            out.append((setup.name, run_digest(repo, setup, period, now=now, smtp=smtp)))
        except DeliveryError as exc:  # email not set up: say so, send the others
            out.append((setup.name, exc))
    return out
