"""`reelwatch run`: APScheduler wiring only. Each feed is a job on its own interval with
jitter; the stored feed state (backoff, Retry-After) decides whether a tick polls.
A saved feeds.yaml is applied without a restart (Service.apply); a broken one is refused."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from alerts.notices import render_config_refused
from alerts.outbox import Pacer, dispatch_pending
from alerts.routing import make_router
from alerts.slack import SlackMessage, SlackSettings
from monitor.config import (
    Config,
    FeedConfig,
    StartRefusal,
    applied_key,
    load_config,
    parse_config,
)
from monitor.decide import gone_at, is_due
from monitor.errors import ConfigError, DeliveryError
from monitor.health import check_health
from monitor.metrics import CYCLE_EVENT, Metrics, PollCycle, log_fields
from monitor.pipeline import FeedReport, Poller, utcnow
from monitor.reload import ConfigChange, diff_config, watch_config
from monitor.types import FeedState

log = logging.getLogger(__name__)

HEARTBEAT = "scheduler"
HEARTBEAT_EVERY = timedelta(seconds=30)
DISPATCH_EVERY = timedelta(seconds=10)
# a refusal notice Slack did not take (it is down; no network yet at boot): posted again
NOTICE_RETRY = timedelta(seconds=30)
REFUSAL_RETRY_JOB = "config-refused-retry"
HEALTH_EVERY = timedelta(minutes=5)
MAINTENANCE_EVERY = timedelta(hours=1)
DIGESTS_EVERY = timedelta(minutes=1)  # a digest is sent within a minute of its time
STARTUP_SPREAD_MAX = 30.0  # seconds over which the first polls after start are spread
RELOAD_RETRY = timedelta(seconds=30)  # a good edit the database kept from being applied
SUMMARY_EVERY = timedelta(minutes=1)  # feeds poll on their own intervals: a line a minute
# what alerts.digest logs itself (once: the service said a retry or a send twice)
_LOGGED_BY_DIGEST = frozenset({"sent", "partial", "retry", "failed"})
WATCH_RETRY = timedelta(seconds=5)  # feeds.yaml's directory missing: looked for again


class Service:
    lag_jobs: tuple[str, ...] = ("feed:",)  # the jobs whose late start is scheduler lag

    def __init__(
        self,
        config: Config,
        poller: Poller,
        slack: SlackSettings,
        config_path: Path | None = None,  # watched for edits; None: no hot reload
        *,
        metrics: Metrics | None = None,  # None: no --metrics-port
        summary_every: timedelta = SUMMARY_EVERY,
        refused: StartRefusal | None = None,  # config_path refused: config is the last applied
        config_text: str | None = None,  # config_path's text as read at start, good or refused
    ):
        self.config = config
        self.poller = poller
        self.slack = slack
        self.config_path = config_path
        self._config_text = config_text  # the text last read, good or refused
        self._refused: str | None = None  # the refusal last posted; a good edit clears it
        self._refused_at_start = refused
        self._started = utcnow()
        self.scheduler = AsyncIOScheduler(
            timezone="UTC",
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        )
        self._stop = asyncio.Event()
        self._pacer = Pacer()
        self._digest_errors: set[str] = set()
        self.metrics = metrics
        self.summary_every = max(summary_every, timedelta(seconds=1))
        self._cycle = PollCycle()
        poller.observers.append(self._polled)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        await self.heartbeat()  # a worker writes its own, and "scheduler" only if it schedules
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
        self.scheduler.add_job(
            self.check_health, IntervalTrigger(seconds=HEALTH_EVERY.total_seconds()), id="health"
        )
        # digests: the digests table says what is owed, so one missed while the service
        # was down goes out now, and a reloaded schedule needs no rescheduling here
        self.scheduler.add_job(
            self.send_digests, IntervalTrigger(seconds=DIGESTS_EVERY.total_seconds()),
            id="digests", next_run_time=now,
        )  # fmt: skip
        self.scheduler.add_job(
            self.log_summary, IntervalTrigger(seconds=self.summary_every.total_seconds()),
            id="summary",
        )  # fmt: skip
        self.scheduler.add_job(
            self.maintain, IntervalTrigger(seconds=MAINTENANCE_EVERY.total_seconds()),
            id="maintenance", next_run_time=now + timedelta(minutes=5),
        )  # fmt: skip
        self.scheduler.add_listener(self._job_submitted, EVENT_JOB_SUBMITTED)
        self.scheduler.start()
        watcher = asyncio.create_task(self.watch_config()) if self.config_path else None
        feeds = sum(1 for f in self.config.feeds if f.enabled)
        log.info("service started feeds=%d topics=%d", feeds, len(self.config.topics))
        if (start := self._refused_at_start) is not None:
            await self.refuse(start.problems, since=start.applied_at)
        try:
            await self._stop.wait()
        finally:
            log.info("service stopping")
            self._stop.set()  # also ends the watch of feeds.yaml
            if watcher is not None:
                watcher.cancel()
                try:
                    await watcher
                except asyncio.CancelledError:
                    pass
                except Exception:  # the watch's end must not keep the service from stopping
                    log.exception("config watch crashed")
            self.scheduler.shutdown(wait=False)
            await self.log_summary()  # the polls since the last line
            await self.poller.aclose()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def schedule_feeds(self) -> None:
        states = await self.poller.db(self.poller.repo.feed_states)
        self._schedule([f for f in self.config.feeds if f.enabled], states)

    def _schedule(self, feeds: list[FeedConfig], states: dict[str, FeedState]) -> None:
        now = utcnow()
        spread = min(STARTUP_SPREAD_MAX, 0.05 * len(feeds))
        for feed in feeds:
            interval = self.config.interval(feed)
            state = states.get(feed.name)
            if state is not None and gone_at(state, feed.url):
                log.warning(
                    "feed disabled feed=%s reason=%r: give it a new url to poll it again",
                    feed.name, state.last_error,
                )  # fmt: skip
                continue
            if state is not None and state.url != feed.url:
                state = None  # a new URL starts afresh
            # the record in storage, not the scheduler's memory, says when a feed is due
            first = now + timedelta(seconds=random.uniform(0, spread))
            if state is not None and state.next_poll:
                due = state.next_poll
                if not state.consecutive_failures and state.last_attempt:
                    due = min(due, state.last_attempt + interval)  # an interval made shorter
                first = max(first, due)
            seconds = interval.total_seconds()
            self.scheduler.add_job(
                self.poll, IntervalTrigger(seconds=seconds, jitter=min(seconds * 0.1, 60)),
                args=[feed], id=f"feed:{feed.name}", next_run_time=first, replace_existing=True,
            )  # fmt: skip

    async def apply(self, config: Config) -> ConfigChange:
        """Run on an edited feeds.yaml: swap the config, the classifier rules and the Slack
        router, and reschedule the feeds that were added, removed or changed."""
        states = await self.poller.db(self.poller.repo.feed_states)
        change = diff_config(self.config, config)
        router = make_router(config.slack, self.slack.transport)
        # Nothing below awaits: every job on the loop sees the old config or the new.
        self.config = config
        self.poller.reconfigure(config, router)
        self._refused = None
        self._drop_job(REFUSAL_RETRY_JOB)  # fixed: nothing to say
        for name in (*change.feeds_removed, *change.feeds_changed):
            self._drop_job(f"feed:{name}")  # its stored items stay
        fresh = {*change.feeds_added, *change.feeds_changed}
        self._schedule([f for f in config.feeds if f.enabled and f.name in fresh], states)
        log.info("config reloaded %s", change.summary())
        return change

    async def reload(self) -> None:
        """Read feeds.yaml again; apply it, or refuse it and keep the last good one."""
        assert self.config_path is not None
        try:
            text: str | None = self.config_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = None  # load_config below says what is wrong
        if text is not None and text == self._config_text:
            return  # an editor's save often comes as several events
        self._config_text = text
        try:
            if text is None:
                config = load_config(self.config_path)
            else:
                config = parse_config(text, str(self.config_path))
        except ConfigError as exc:
            await self.refuse(exc)
            return
        applied = False
        try:
            await self.apply(config)
            applied = True
            if text is not None:  # what a restart starts on if the file breaks
                path = applied_key(self.config_path)
                await self.poller.db(self.poller.repo.save_applied_config, path, text, utcnow())
        except Exception as exc:  # the database away (a restart, a lock): not this edit's fault
            self._config_text = None  # not done: the same text must not count as seen
            log.error(
                "config %s, retrying in %d s error=%r",
                "applied but not kept yet for a restart" if applied else "not applied yet",
                RELOAD_RETRY.total_seconds(), str(exc),
            )  # fmt: skip
            self.scheduler.add_job(
                self.reload, "date", run_date=utcnow() + RELOAD_RETRY, id="config-retry",
                replace_existing=True,
            )  # fmt: skip

    async def refuse(self, exc: ConfigError, *, since: datetime | None = None) -> None:
        """Say feeds.yaml was refused: an edit (the last good config kept), or at start
        (`since`: when the copy the service started on was applied)."""
        problems = str(exc)
        kept = "still running on the last good one"
        if since is not None:
            kept = f"started on the one applied {since:%Y-%m-%d %H:%M} UTC"
        log.error("config refused, %s: %s", kept, " | ".join(problems.splitlines()))
        if problems == self._refused:
            return  # said once already; a good edit lets the next refusal be said again
        self._refused = problems
        self._drop_job(REFUSAL_RETRY_JOB)  # this one is newer
        try:
            await asyncio.to_thread(self._send_notice, render_config_refused(problems, since))
        except DeliveryError as error:
            log.error("config refusal notice not sent error=%r", str(error))
            if error.permanent:
                return
            # not said: posted again (a restart on a broken file has no other occasion)
            self._refused = None
            self.scheduler.add_job(
                self.refuse, "date", run_date=utcnow() + NOTICE_RETRY, args=[exc],
                kwargs={"since": since}, id=REFUSAL_RETRY_JOB, replace_existing=True,
            )  # fmt: skip

    async def watch_config(self) -> None:
        assert self.config_path is not None
        # not told what the file said at start; a service started on the applied copy was
        # (None: not there), and a file put back since is not the one it runs on
        if self._config_text is None and self._refused_at_start is None:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                self._config_text = self.config_path.read_text(encoding="utf-8")
        polling: bool | None = None  # watchfiles' choice: inotify on Linux
        missing = False  # the directory is not there (said once)
        while True:
            try:
                async for _ in watch_config(self.config_path, self._stop, force_polling=polling):
                    missing = False
                    await self._reload_logged()
                return  # stopped
            except Exception as exc:  # e.g. the inotify watch limit is reached
                if not polling:
                    log.warning("config watch failed error=%r: checking every second instead",
                                exc)  # fmt: skip
                    polling = True
                    continue
                # nothing to watch (run on the last applied feeds.yaml, its directory not
                # there: a volume not mounted, a release removed): looked for until it is
                if not missing:
                    log.error(
                        "config watch failed error=%r: looking for %s every %d s",
                        exc, self.config_path.parent, WATCH_RETRY.total_seconds(),
                    )  # fmt: skip
                    missing = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), WATCH_RETRY.total_seconds())
                if self._stop.is_set():
                    return
                if self.config_path.exists():  # saved before the watch could see it
                    await self._reload_logged()

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except Exception:  # a reload's surprise must not end the watch
            log.exception("config reload crashed")

    def _drop_job(self, job_id: str) -> None:
        if self.scheduler.get_job(job_id) is not None:
            self.scheduler.remove_job(job_id)

    async def check_health(self) -> None:
        notices = await asyncio.to_thread(
            check_health, self.poller.repo, self.config, self._send_notice, utcnow(),
            judged_since=self._started,
        )  # fmt: skip
        if notices:
            log.info("health notices sent=%d", len(notices))

    def _send_notice(self, message: SlackMessage) -> Any:
        """Post a notice to the Slack default channel (stdout without Slack); in a thread.
        A bot token with no default channel has nowhere to post: the log line says it all."""
        router = make_router(self.config.slack, self.slack.transport)
        # a webhook posts to its own channel; without Slack, stdout: neither needs a name
        channel = router.default_channel if router.transport == "bot" else router.transport
        if channel is None:
            return None
        self._pacer.wait(channel)
        return self.slack.sender_for(channel).send(channel, message)

    async def poll(self, feed: FeedConfig) -> None:
        state = await self.poller.db(self.poller.repo.feed_state, feed.name)
        now = utcnow()
        # a tick may come up to the jitter early; backoff pushes next_poll well past a tick
        slack = timedelta(seconds=min(self.config.interval(feed).total_seconds() * 0.25, 120))
        interval = self.config.interval(feed)
        if (
            state is not None
            and state.url == feed.url
            and not is_due(state, now + slack, interval=interval)
        ):
            return
        try:
            report = await self.poller.poll_feed(feed)
        except asyncio.CancelledError:
            if not self._stop.is_set():
                raise
            # stopped mid-poll (its parse cancelled): a poll stored whole or not at all,
            # polled again at the next start; not a job's error, with a traceback
            log.info("poll stopped feed=%s: the service is stopping", feed.name)
            return
        if report.status == "gone":
            self._drop_job(f"feed:{feed.name}")
        if report.deliveries:
            self.scheduler.modify_job("dispatch", next_run_time=utcnow())

    async def dispatch(self) -> None:
        repo = self.poller.repo
        # its own thread: a slow Slack must not hold up the thread that stores polls
        report = await asyncio.to_thread(
            dispatch_pending, repo, self.slack.sender_for, utcnow(),
            burst=self.config.slack.burst, pacer=self._pacer, stopping=self._stop.is_set,
        )  # fmt: skip
        if report.total:
            log.info(
                "deliveries sent=%d retrying=%d waiting=%d failed=%d",
                report.sent, report.retrying, report.waiting, report.failed,
            )  # fmt: skip
        if self.metrics is not None:
            self.metrics.record_dispatch(report)
            self.metrics.set_delivery_counts(await asyncio.to_thread(repo.delivery_counts))

    async def send_digests(self) -> None:
        from monitor.digests import send_due_digests

        results = await asyncio.to_thread(send_due_digests, self.poller.repo, self.config, utcnow())
        for name, result in results:
            if isinstance(result, DeliveryError):
                if name not in self._digest_errors:  # once, not every minute
                    log.error("digest=%s not sent: %s", name, result)
                self._digest_errors.add(name)
            else:
                self._digest_errors.discard(name)
                if result.status not in _LOGGED_BY_DIGEST:
                    log.info("digest=%s %s", name, result.message)
                if self.metrics is not None and result.status == "sent":
                    self.metrics.record_digest_sent(name)

    async def maintain(self) -> None:
        """Prune what nothing reads any more (see Repository.prune)."""
        repo = self.poller.repo
        pruned = await self.poller.db(repo.prune, utcnow(), self.config.stories.window)
        if any(pruned.values()):
            log.info("maintenance %s", " ".join(f"{k}={v}" for k, v in pruned.items()))

    async def heartbeat(self) -> None:
        await self.poller.db(self.poller.repo.write_heartbeat, HEARTBEAT, utcnow())

    def _polled(self, report: FeedReport) -> None:
        self._cycle.record(report)
        if self.metrics is not None:
            self.metrics.record_poll(report)

    async def log_summary(self) -> None:
        """The summary line of the polls since the last one; none for a quiet spell.
        A coroutine: APScheduler would run a plain function in a thread, away from the
        loop that feeds the cycle."""
        cycle, self._cycle = self._cycle, PollCycle()
        if cycle.feeds:
            log_fields(log, CYCLE_EVENT, cycle.fields())

    def _job_submitted(self, event: JobSubmissionEvent) -> None:
        # APScheduler calls this on the loop as it starts a job; a feed job's lateness
        # (a busy loop, a slow database thread) is the scheduler's lag
        if not event.job_id.startswith(self.lag_jobs) or not event.scheduled_run_times:
            return
        lag = max((utcnow() - min(event.scheduled_run_times)).total_seconds(), 0.0)
        self._cycle.record_lag(lag)
        if self.metrics is not None:
            self.metrics.record_lag(lag)
