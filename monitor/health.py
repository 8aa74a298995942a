"""Feed health notices: one to the Slack default channel when a feed starts failing, falls
silent or is disabled, and one when it recovers. Orchestration only:

    repo.feed_states + repo.feed_activity | decide.health_flags | decide.decide_notices
        | notices.render_health_notice | send | repo.record_feed_notice / clear_feed_notice

The flags are the ones `reelwatch feeds status` shows; what was noticed is stored
(feed_notices), so a restart repeats nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from alerts.notices import render_health_notice
from alerts.slack import SlackMessage
from monitor.config import Config
from monitor.decide import decide_notices, health_flags
from monitor.errors import DeliveryError
from monitor.normalize import shown_url
from monitor.types import FeedState, HealthNotice
from storage.types import FeedActivity

if TYPE_CHECKING:
    from storage.repo import Repository

log = logging.getLogger(__name__)

HEALTH_WINDOW = timedelta(days=30)  # the window a feed's usual rhythm is measured over
RECENT = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class FeedHealth:
    state: FeedState | None
    activity: FeedActivity | None
    flags: list[str]  # decide.health_flags: what a user should look at


def feed_health(config: Config, repo: Repository, now: datetime) -> dict[str, FeedHealth]:
    """Each enabled feed's stored state, its recent activity and its health flags: what
    `feeds status`, the health notices and the digests' feed-health line all read."""
    states = repo.feed_states()
    activity = repo.feed_activity(now - HEALTH_WINDOW, now - RECENT)
    out = {}
    for feed in config.feeds:
        if not feed.enabled:
            continue
        state, act = states.get(feed.name), activity.get(feed.name)
        flags = health_flags(
            state, items_in_window=act.items_window if act else 0, window=HEALTH_WINDOW,
            last_new_item=act.last_new_item if act else None, now=now,
        )  # fmt: skip
        out[feed.name] = FeedHealth(state, act, flags)
    return out


def check_health(
    repo: Repository,
    config: Config,
    send: Callable[[SlackMessage], object] | None,
    now: datetime,
    *,
    judged_since: datetime | None = None,
) -> list[HealthNotice]:
    """Notice what changed in the feeds' health since the last check; return what was sent.

    `send` posts to the default channel (None: no channel, the notice is only logged).
    Only feeds polled at their configured URL since `judged_since` are judged: after a
    restart, the days the service was down must not look like a silent feed.
    """
    health = feed_health(config, repo, now)
    noticed = repo.feed_notices()
    feeds = {f.name: f for f in config.feeds if f.enabled}
    for name in set(noticed) - set(feeds):  # removed or disabled in feeds.yaml: forget it
        repo.clear_feed_notice(name)
    flags: dict[str, list[str]] = {}
    for name, feed in feeds.items():
        state = health[name].state
        if state is None or state.url != feed.url or state.last_attempt is None:
            continue
        if judged_since is not None and state.last_attempt < judged_since:
            continue
        flags[name] = health[name].flags
    sent = []
    for notice in decide_notices(flags, noticed):
        feed, state = feeds[notice.feed], health[notice.feed].state
        assert state is not None  # judged feeds have one
        if notice.recovered:
            log.info("feed recovered feed=%s was=%s", notice.feed, notice.flag)
        else:
            log.warning(
                "feed needs a look feed=%s flag=%r error=%r",
                notice.feed, notice.detail, state.last_error,
            )  # fmt: skip
        error = state.last_error if notice.flag in ("failing", "disabled") else None
        message = render_health_notice(notice, url=shown_url(feed.url), error=error)
        if send is not None:
            try:
                send(message)
            except DeliveryError as exc:
                if not exc.permanent:  # noticed at the next check
                    log.warning("health notice not sent feed=%s error=%r", notice.feed, str(exc))
                    continue
                log.error("health notice failed feed=%s error=%r", notice.feed, str(exc))
            except Exception:  # one notice must not stop the others
                log.exception("health notice crashed feed=%s", notice.feed)
                continue
        if notice.recovered:
            repo.clear_feed_notice(notice.feed)
        else:
            repo.record_feed_notice(notice.feed, notice.flag, now)
        sent.append(notice)
    return sent
