"""`reelwatch run --worker`: one of several processes sharing the work on PostgreSQL.

No coordinator of our own: each worker claims due feeds from the feeds table (FOR
UPDATE SKIP LOCKED, with a lease that runs out if the worker dies) and due deliveries
the same way; one worker at a time also holds the scheduling role (a PostgreSQL
advisory lock) for digests, feed-health notices and the scheduler heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import timedelta

from apscheduler.triggers.interval import IntervalTrigger

from monitor.config import FeedConfig
from monitor.pipeline import utcnow
from monitor.scheduler import HEARTBEAT, Service
from monitor.types import FeedState
from storage.db import RoleLock

log = logging.getLogger(__name__)

CLAIM_EVERY = timedelta(seconds=2)
SCHEDULING_ROLE = 7400714  # advisory lock key of the scheduling role
LEASE_MARGIN = timedelta(seconds=10)


class WorkerService(Service):
    lag_jobs = ("claim",)  # a late claim is the scheduler lag of a worker

    def __init__(self, *args: object, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._role = RoleLock(self.poller.repo.engine, SCHEDULING_ROLE)
        self._in_flight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._feeds_changed = True

    async def schedule_feeds(self) -> None:
        await self._ensure_feeds()
        self.scheduler.add_job(
            self.claim, IntervalTrigger(seconds=CLAIM_EVERY.total_seconds()),
            id="claim", next_run_time=utcnow(),
        )  # fmt: skip

    def _schedule(self, feeds: list[FeedConfig], states: dict[str, FeedState]) -> None:
        # an edited feeds.yaml: the next claim writes the new feeds' rows first
        self._feeds_changed = True

    async def _ensure_feeds(self) -> None:
        rows = [(f.name, f.url) for f in self.config.feeds if f.enabled]
        await self.poller.db(self.poller.repo.ensure_feeds, rows)
        self._feeds_changed = False

    async def claim(self) -> None:
        if self._feeds_changed:
            await self._ensure_feeds()
        feeds = {f.name: f for f in self.config.feeds if f.enabled}
        room = self.config.defaults.concurrency - len(self._in_flight)
        lease = max((self.config.timeout(f) for f in feeds.values()), default=timedelta(0))
        claimed = await self.poller.db(
            self.poller.repo.claim_due_feeds,
            [n for n in feeds if n not in self._in_flight], utcnow(), 2 * lease + LEASE_MARGIN,
            room, self.worker,
        )  # fmt: skip
        for name in claimed:
            self._in_flight.add(name)
            task = asyncio.create_task(self._poll_claimed(feeds[name]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _poll_claimed(self, feed: FeedConfig) -> None:
        try:
            report = await self.poller.poll_feed(feed)
            if report.deliveries:
                self.scheduler.modify_job("dispatch", next_run_time=utcnow())
        except Exception:  # the lease runs out and the feed is polled again
            log.exception("poll crashed feed=%s", feed.name)
        finally:
            self._in_flight.discard(feed.name)

    async def _scheduling(self) -> bool:
        return await asyncio.to_thread(self._role.held)

    async def check_health(self) -> None:
        if await self._scheduling():
            await super().check_health()

    async def send_digests(self) -> None:
        if await self._scheduling():
            await super().send_digests()

    async def maintain(self) -> None:
        if await self._scheduling():
            await super().maintain()

    async def heartbeat(self) -> None:
        now = utcnow()
        await self.poller.db(self.poller.repo.write_heartbeat, f"worker:{self.worker}", now)
        if await self._scheduling():
            await self.poller.db(self.poller.repo.write_heartbeat, HEARTBEAT, now)

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            for task in list(self._tasks):
                task.cancel()
            self._role.release()
