"""One poll of one feed, end to end: fetch -> parse (process pool) -> decide -> store.

Orchestration only, like reader's Pipeline: the decisions live in decide.py,
parse.py and classify/, the I/O in fetch.py and storage/.

    repo.feed_state | fetcher.fetch | pool(parse_to_blob)
        | decide_feed_update | repo.store_poll
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from alerts.routing import Router
from monitor.config import Config, FeedConfig
from monitor.decide import decide_feed_update
from monitor.errors import FetchError, ParseError
from monitor.fetch import Fetcher, HostTurn
from monitor.normalize import shown_url
from monitor.parse import ParseJob, init_parse_worker, parse_to_blob
from monitor.types import FeedState, ParsedBlob, PollOutcome
from storage.types import PollWrite, StoreResult

if TYPE_CHECKING:
    from storage.repo import Repository

log = logging.getLogger(__name__)
T = TypeVar("T")


class Unknown(enum.Enum):
    UNKNOWN = "not loaded yet"


UNKNOWN = Unknown.UNKNOWN

# A group commit: storing costs per batch as well as per feed (the transaction, reading
# the open stories the new items may report), a third of storage's CPU in batches of
# two. While other polls are under way, a write waits up to WRITE_LINGER for WRITE_BATCH
# of them to join it; alone, it is stored at once.
WRITE_BATCH = 16
WRITE_LINGER = 0.1  # seconds


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_parse_pool(workers: int | None = None) -> ProcessPoolExecutor:
    # forkserver: workers never inherit the event loop's threads or sockets.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["monitor.parse", "feedparser"])
    return ProcessPoolExecutor(
        max_workers=workers or os.cpu_count() or 2, mp_context=ctx,
        initializer=init_parse_worker, initargs=(os.getpid(),),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class FeedReport:
    feed: str
    status: str  # ok | unchanged | failed | gone
    new_items: int = 0
    matches: int = 0
    deliveries: int = 0
    error: str | None = None
    ms: int = 0


@dataclass(slots=True)
class PollSummary:
    reports: list[FeedReport] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.reports if r.status == status)

    @property
    def new_items(self) -> int:
        return sum(r.new_items for r in self.reports)

    @property
    def matches(self) -> int:
        return sum(r.matches for r in self.reports)

    @property
    def deliveries(self) -> int:
        return sum(r.deliveries for r in self.reports)


class Poller:
    def __init__(
        self,
        config: Config,
        repo: Repository,
        *,
        router: Router | None,
        clock: Callable[[], datetime] = utcnow,
        parse_workers: int | None = None,
    ):
        self.config = config
        self.repo = repo
        self.router = router
        self.clock = clock
        d = config.defaults
        self.fetcher = Fetcher(
            user_agent=d.user_agent,
            max_body_bytes=d.max_body_bytes,
            concurrency=d.concurrency,
            per_host_concurrency=d.per_host_concurrency,
            allow_private_networks=d.allow_private_networks,
        )
        self._parse_workers = parse_workers
        self._pool: ProcessPoolExecutor | None = None  # started on the first changed feed
        # One thread owns the database: SQLite writes never contend, the loop never blocks.
        self._db: Executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reelwatch-db")
        self._rules, self._gate = config.rules(), config.gate()
        repo.configure_stories(config.stories.rules(), self._gate)
        self._writes: list[tuple[PollWrite, asyncio.Future[StoreResult | Exception]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._slots: asyncio.Semaphore | None = None  # feeds between fetch and store
        self._underway = 0  # polls holding a slot: fetching, parsing, or waiting to store
        self._write_queued_event: asyncio.Event | None = None  # a write joined the queue
        # called with every poll's report, on the loop: the service's summary and metrics
        self.observers: list[Callable[[FeedReport], None]] = []

    def reconfigure(self, config: Config, router: Router | None) -> None:
        """Take an edited feeds.yaml. A parse job takes the rules, and a poll's write the
        router, when it starts: the next ones use the new, none sees a half-swapped mix."""
        self.config = config
        self._rules, self._gate = config.rules(), config.gate()
        self.router = router
        self.repo.configure_stories(config.stories.rules(), self._gate)

    def _in_flight(self) -> int:
        """How many feeds may be between fetch and store: twice the fetches at a time,
        so that parsing and storing never leave the fetcher idle."""
        return 2 * self.config.defaults.concurrency

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def aclose(self) -> None:
        await self.fetcher.aclose()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._db.shutdown(wait=True)

    async def _parse(self, job: ParseJob) -> ParsedBlob:
        if self._pool is None:
            self._pool = make_parse_pool(self._parse_workers)
        pool = self._pool
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, parse_to_blob, job)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): the next feed gets a fresh pool.
            # Other feeds in flight on the same pool see this too; replace it once.
            if self._pool is pool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise ParseError("the parser process died while reading this feed") from None

    async def poll_feed(
        self, feed: FeedConfig, state: FeedState | Unknown | None = UNKNOWN
    ) -> FeedReport:
        # Fetched bodies and parsed items wait for the parse pool and the one storage
        # thread: bound how many feeds are between fetch and store, or a fast network
        # and a slow disk pile thousands of them up in memory. A feed takes its turn at
        # its host first: a slow outlet's queue of due feeds must not hold those slots.
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._in_flight())
        async with self.fetcher.turn(feed.url) as turn, self._slots:
            self._underway += 1
            try:
                return await self._poll_feed(feed, state, turn)
            finally:
                self._underway -= 1

    async def _poll_feed(
        self, feed: FeedConfig, state: FeedState | Unknown | None, turn: HostTurn
    ) -> FeedReport:
        if state is UNKNOWN:
            state = await self.db(self.repo.feed_state, feed.name)
        same_url = state is not None and state.url == feed.url
        now = self.clock()
        parsed: ParsedBlob | None = None
        ms = 0  # time spent fetching and parsing, not waiting for a slot
        try:
            fetched = await self.fetcher.fetch(
                feed.url,
                etag=state.etag if same_url else None,
                last_modified=state.last_modified if same_url else None,
                timeout=self.config.timeout(feed).total_seconds(),
                turn=turn,
            )
            ms = fetched.elapsed_ms
            if fetched.body is None:
                outcome = PollOutcome(
                    "unchanged", 0, 304, etag=fetched.etag, last_modified=fetched.last_modified
                )
            else:
                # a feed polled before repeats most of its items: the workers skip those
                known = (
                    await self.db(self.repo.recent_identities, feed.name)
                    if state is not None and state.last_success is not None
                    else frozenset()
                )
                job = ParseJob(
                    feed.name, fetched.url, fetched.body, fetched.headers, feed.language, now,
                    self._rules, self._gate, known,
                )  # fmt: skip
                started = time.monotonic()
                parsed = await self._parse(job)
                ms += int((time.monotonic() - started) * 1000)
                outcome = PollOutcome(
                    "ok", 0, fetched.status, warning=parsed.warning, etag=fetched.etag,
                    last_modified=fetched.last_modified, title=parsed.title,
                )  # fmt: skip
        except FetchError as exc:
            ms = exc.elapsed_ms
            outcome = PollOutcome(
                "failed", 0, exc.status, error=exc.reason, retry_after=exc.retry_after,
                gone=exc.gone,
            )  # fmt: skip
        except ParseError as exc:
            outcome = PollOutcome("failed", 0, 200, error=exc.reason)
        except Exception as exc:  # one feed's surprise must not stop the others
            log.exception("feed poll crashed feed=%s", feed.name)
            outcome = PollOutcome(
                "failed", 0, None, error=f"internal error: {type(exc).__name__}: {exc}"
            )
        outcome = replace(outcome, elapsed_ms=ms)
        update = decide_feed_update(
            state, outcome, interval=self.config.interval(feed),
            max_backoff=self.config.defaults.max_backoff, now=now,
        )  # fmt: skip
        stored = await self._store(PollWrite(feed.name, feed.url, update, parsed, self.router, now))
        if isinstance(stored, Exception):
            log.error("storing the poll failed feed=%s error=%r", feed.name, str(stored))
            report = FeedReport(feed.name, "failed", error=f"storage error: {stored}", ms=ms)
        else:
            report = self._report(feed, update.last_status, outcome, stored, ms)
        for observe in self.observers:
            observe(report)
        return report

    async def _store(self, write: PollWrite) -> StoreResult | Exception:
        """Queue a poll's write; one writer commits whatever has queued up meanwhile."""
        future: asyncio.Future[StoreResult | Exception] = asyncio.get_running_loop().create_future()
        self._writes.append((write, future))
        if self._write_queued_event is not None:
            self._write_queued_event.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        return await future

    async def _linger(self) -> None:
        """Wait, up to WRITE_LINGER, for WRITE_BATCH writes or for every poll under way
        to have queued its own (see WRITE_BATCH)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WRITE_LINGER
        event = self._write_queued_event = asyncio.Event()
        while len(self._writes) < WRITE_BATCH and self._underway > len(self._writes):
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), deadline - loop.time())
            if loop.time() >= deadline:
                return

    async def _write_queued(self) -> None:
        while self._writes:
            await self._linger()
            batch, self._writes = self._writes, []
            try:
                results = await self.db(self.repo.store_polls, [w for w, _ in batch])
            except Exception as exc:  # the database itself is gone
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    def _report(
        self, feed: FeedConfig, status: str, outcome: PollOutcome, stored: StoreResult, ms: int
    ) -> FeedReport:
        if status in ("failed", "gone"):
            log.warning(
                "feed failed feed=%s url=%s status=%s error=%r ms=%d",
                feed.name, shown_url(feed.url), outcome.http_status, outcome.error, ms,
            )  # fmt: skip
        else:
            # a feed read despite a problem says so; the others only in debug: the poll
            # cycle's line counts them, and a line per feed per poll is 200,000 lines a
            # day for 2,000 feeds (and 8% of a warm poll's time)
            log.log(
                logging.INFO if outcome.warning else logging.DEBUG,
                "feed polled feed=%s status=%s new=%d matches=%d ms=%d%s",
                feed.name, outcome.http_status, stored.new_items, stored.new_matches, ms,
                f" warning={outcome.warning!r}" if outcome.warning else "",
            )  # fmt: skip
        return FeedReport(
            feed.name, status, stored.new_items, stored.new_matches, stored.new_deliveries,
            outcome.error, ms,
        )  # fmt: skip

    async def poll_many(
        self,
        feeds: Iterable[FeedConfig],
        on_done: Callable[[FeedReport], None] | None = None,
        states: Mapping[str, FeedState] | None = None,
    ) -> PollSummary:
        """Poll the feeds concurrently; `states` are the feeds' stored states when the
        caller has read them already (else read here, in one query, not one per feed)."""
        summary = PollSummary()
        if states is None:
            states = await self.db(self.repo.feed_states)

        # A few pollers take the feeds in turn, hosts interleaved: one task per feed would
        # cost 10,000 tasks for 10,000 feeds, and a run of one outlet's feeds would fill
        # every slot waiting for that host while the other hosts' feeds wait behind.
        queue = iter(_hosts_interleaved(feeds))

        async def poller() -> None:
            for feed in queue:
                report = await self.poll_feed(feed, states.get(feed.name))
                summary.reports.append(report)
                if on_done:
                    on_done(report)

        await asyncio.gather(*(poller() for _ in range(self._in_flight())))
        return summary


def _hosts_interleaved(feeds: Iterable[FeedConfig]) -> list[FeedConfig]:
    """The feeds in their order, but one per host in turn: a, a, a, b, c -> a, b, c, a, a."""
    by_host: dict[str, list[FeedConfig]] = {}
    for feed in feeds:
        by_host.setdefault(urlsplit(feed.url).hostname or "", []).append(feed)
    turns = collections.deque(map(iter, by_host.values()))
    out = []
    while turns:
        host = turns.popleft()
        if (feed := next(host, None)) is not None:
            out.append(feed)
            turns.append(host)
    return out
