"""What the service reports about itself: the poll-cycle summary line (counts, timings)
and, with `reelwatch run --metrics-port`, Prometheus metrics in a registry of their own.

Only counts, durations, statuses and feed or digest names go in: never a URL, a token,
an address or a feed's text, so neither the log line nor the scrape can leak a secret."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alerts.outbox import DispatchReport
    from monitor.pipeline import FeedReport

log = logging.getLogger(__name__)

CYCLE_EVENT = "poll cycle"
# a poll's status (monitor.pipeline.FeedReport) -> its outcome label
OUTCOMES = {"ok": "ok", "unchanged": "not_modified", "failed": "failed", "gone": "failed"}
DELIVERY_STATUSES = ("pending", "sent", "failed")
DISPATCH_RESULTS = ("sent", "retrying", "waiting", "failed")
# seconds; a feed's timeout is 30 s by default, a 304 from a nearby host a few ms
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)


def percentile(values: Iterable[int], p: float) -> int:
    """Nearest-rank percentile (p in 0..100) of `values`; 0 for none."""
    ordered = sorted(values)
    if not ordered:
        return 0
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return ordered[rank - 1]


@dataclass(slots=True)
class PollCycle:
    """The polls since the last summary line: fed each poll's report, read as log fields.

    Not thread-safe: in `run` the event loop feeds it (poll jobs and APScheduler's
    listeners both run there)."""

    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    outcomes: dict[str, int] = field(init=False)
    new_items: int = 0
    matches: int = 0
    deliveries: int = 0
    poll_ms: list[int] = field(default_factory=list)
    lag_ms: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.started = self.clock()
        self.outcomes = dict.fromkeys(("ok", "not_modified", "failed"), 0)

    @property
    def feeds(self) -> int:
        return sum(self.outcomes.values())

    def record(self, report: FeedReport) -> None:
        self.outcomes[OUTCOMES.get(report.status, "failed")] += 1
        self.new_items += report.new_items
        self.matches += report.matches
        self.deliveries += report.deliveries
        self.poll_ms.append(report.ms)

    def record_lag(self, seconds: float) -> None:
        self.lag_ms.append(round(seconds * 1000))

    def fields(self, *, with_lag: bool = True) -> dict[str, int]:
        """The summary's fields, in the order the line shows them."""
        out = {
            "feeds": self.feeds,
            **self.outcomes,
            "new_items": self.new_items,
            "matches": self.matches,
            "deliveries": self.deliveries,
            "p50_ms": percentile(self.poll_ms, 50),
            "p95_ms": percentile(self.poll_ms, 95),
        }
        if with_lag:  # only the scheduler (`run`) starts polls late
            out["lag_max_ms"] = max(self.lag_ms, default=0)
        out["seconds"] = round(self.clock() - self.started)
        return out


def log_fields(logger: logging.Logger, event: str, fields: Mapping[str, Any]) -> None:
    """One info line: `event k=v k=v` as text; with --log-format json the formatter puts
    `event` in "msg" and each field at the top level of the object."""
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    logger.info("%s %s", event, text, extra={"event": event, "fields": dict(fields)})


class Metrics:
    """The service's Prometheus metrics, in a CollectorRegistry of their own: no state
    shared through the library's global registry (tests run several services in one
    process). Safe to call from any thread."""

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            GCCollector,
            Histogram,
            PlatformCollector,
            ProcessCollector,
        )

        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        ProcessCollector(registry=reg)  # memory, CPU, open files
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
        self.polls = Counter(
            "reelwatch_polls", "Feed polls, by outcome (ok, not_modified, failed).",
            ["outcome"], registry=reg,
        )  # fmt: skip
        self.failures = Counter(
            "reelwatch_poll_failures", "Failed feed polls, by feed.", ["feed"], registry=reg
        )
        self.items_stored = Counter(
            "reelwatch_items_stored", "New items stored from feeds.", registry=reg
        )
        self.matches = Counter(
            "reelwatch_matches", "Topic matches of newly stored items.", registry=reg
        )
        self.deliveries_queued = Counter(
            "reelwatch_deliveries_queued", "Alert deliveries added to the outbox.", registry=reg
        )
        self.deliveries = Gauge(
            "reelwatch_deliveries", "Deliveries in the outbox by status, read from storage "
            "after each dispatch.", ["status"], registry=reg,
        )  # fmt: skip
        self.dispatched = Counter(
            "reelwatch_deliveries_dispatched", "Deliveries dispatched by result: sent, "
            "retrying (to be tried again), waiting (a later report held until its story's "
            "alert is sent), failed.", ["result"], registry=reg,
        )  # fmt: skip
        self.poll_seconds = Histogram(
            "reelwatch_poll_duration_seconds", "Time to fetch and parse one feed.",
            buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.scheduler_lag = Gauge(
            "reelwatch_scheduler_lag_seconds",
            "How late the last feed poll job started after its scheduled time.",
            registry=reg,
        )
        self.digests_sent = Counter(
            "reelwatch_digests_sent", "Email digests sent, by digest.", ["digest"], registry=reg
        )
        # every known label value from the start: a rate() needs the series before its
        # first increment, and a dashboard shows 0 rather than "no data"
        for outcome in ("ok", "not_modified", "failed"):
            self.polls.labels(outcome)
        for status in DELIVERY_STATUSES:
            self.deliveries.labels(status)
        for result in DISPATCH_RESULTS:
            self.dispatched.labels(result)

    def record_poll(self, report: FeedReport) -> None:
        outcome = OUTCOMES.get(report.status, "failed")
        self.polls.labels(outcome).inc()
        if outcome == "failed":
            self.failures.labels(report.feed).inc()
        self.items_stored.inc(report.new_items)
        self.matches.inc(report.matches)
        self.deliveries_queued.inc(report.deliveries)
        self.poll_seconds.observe(report.ms / 1000)

    def record_lag(self, seconds: float) -> None:
        self.scheduler_lag.set(seconds)

    def record_dispatch(self, report: DispatchReport) -> None:
        for result in DISPATCH_RESULTS:
            if n := getattr(report, result):
                self.dispatched.labels(result).inc(n)

    def set_delivery_counts(self, counts: Mapping[str, int]) -> None:
        for status in {*DELIVERY_STATUSES, *counts}:
            self.deliveries.labels(status).set(counts.get(status, 0))

    def record_digest_sent(self, name: str) -> None:
        self.digests_sent.labels(name).inc()


@contextlib.contextmanager
def serve_metrics(metrics: Metrics | None, host: str, port: int | None) -> Iterator[None]:
    """Serve /metrics on host:port while the block runs (nothing when `metrics` is None).
    OSError (the port is taken, the address is not local) comes out of the `with`."""
    if metrics is None or port is None:
        yield
        return
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    log.info("metrics served host=%s port=%d path=/metrics", host, server.server_port)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
