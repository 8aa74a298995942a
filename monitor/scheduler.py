"""`reelwatch run`: APScheduler wiring only. Each feed is a job on its own interval with
jitter; the stored feed state (backoff, Retry-After) decides whether a tick polls."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from alerts.outbox import Pacer, dispatch_pending
from alerts.slack import SlackSettings
from monitor.config import Config, FeedConfig
from monitor.decide import is_due
from monitor.pipeline import Poller, utcnow

log = logging.getLogger(__name__)

HEARTBEAT = "scheduler"
HEARTBEAT_EVERY = timedelta(seconds=30)
DISPATCH_EVERY = timedelta(seconds=10)
STARTUP_SPREAD_MAX = 30.0  # seconds over which the first polls after start are spread


class Service:
    def __init__(self, config: Config, poller: Poller, slack: SlackSettings):
        self.config = config
        self.poller = poller
        self.slack = slack
        self.scheduler = AsyncIOScheduler(
            timezone="UTC",
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        )
        self._stop = asyncio.Event()
        self._pacer = Pacer()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        await self.poller.db(self.poller.repo.write_heartbeat, HEARTBEAT, utcnow())
        await self.schedule_feeds()
        now = utcnow()
        self.scheduler.add_job(
            self.dispatch, IntervalTrigger(seconds=DISPATCH_EVERY.total_seconds()),
            id="dispatch", next_run_time=now,
        )  # fmt: skip
        self.scheduler.add_job(
            self.heartbeat, IntervalTrigger(seconds=HEARTBEAT_EVERY.total_seconds()),
            id="heartbeat", next_run_time=now,
        )  # fmt: skip
        self.scheduler.start()
        feeds = sum(1 for f in self.config.feeds if f.enabled)
        log.info("service started feeds=%d topics=%d", feeds, len(self.config.topics))
        try:
            await self._stop.wait()
        finally:
            log.info("service stopping")
            self.scheduler.shutdown(wait=False)
            await self.poller.aclose()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def schedule_feeds(self) -> None:
        states = await self.poller.db(self.poller.repo.feed_states)
        now = utcnow()
        enabled = [f for f in self.config.feeds if f.enabled]
        spread = min(STARTUP_SPREAD_MAX, 0.05 * len(enabled))
        for feed in enabled:
            interval = self.config.interval(feed).total_seconds()
            state = states.get(feed.name)
            if state is not None and state.url != feed.url:
                state = None  # a new URL starts afresh, even for a feed that was gone
            if state is not None and state.disabled:
                log.warning(
                    "feed disabled feed=%s reason=%r: give it a new url to poll it again",
                    feed.name, state.last_error,
                )  # fmt: skip
                continue
            # the record in storage, not the scheduler's memory, says when a feed is due
            first = now + timedelta(seconds=random.uniform(0, spread))
            if (
                state is not None
                and state.url == feed.url
                and state.next_poll
                and state.next_poll > first
            ):
                first = state.next_poll
            self.scheduler.add_job(
                self.poll, IntervalTrigger(seconds=interval, jitter=min(interval * 0.1, 60)),
                args=[feed], id=f"feed:{feed.name}", next_run_time=first, replace_existing=True,
            )  # fmt: skip

    async def poll(self, feed: FeedConfig) -> None:
        state = await self.poller.db(self.poller.repo.feed_state, feed.name)
        now = utcnow()
        # a tick may come up to the jitter early; backoff pushes next_poll well past a tick
        slack = timedelta(seconds=min(self.config.interval(feed).total_seconds() * 0.25, 120))
        if state is not None and state.url == feed.url and not is_due(state, now + slack):
            return
        report = await self.poller.poll_feed(feed)
        if report.status == "gone":
            self.scheduler.remove_job(f"feed:{feed.name}")
        if report.deliveries:
            self.scheduler.modify_job("dispatch", next_run_time=utcnow())

    async def dispatch(self) -> None:
        repo = self.poller.repo
        # its own thread: a slow Slack must not hold up the thread that stores polls
        report = await asyncio.to_thread(
            dispatch_pending, repo, self.slack.sender_for, utcnow(),
            burst=self.config.slack.burst, pacer=self._pacer,
        )  # fmt: skip
        if report.sent or report.retrying or report.failed:
            log.info(
                "deliveries sent=%d retrying=%d failed=%d",
                report.sent, report.retrying, report.failed,
            )  # fmt: skip

    async def heartbeat(self) -> None:
        await self.poller.db(self.poller.repo.write_heartbeat, HEARTBEAT, utcnow())
