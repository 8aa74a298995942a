"""What reelwatch says about itself: the poll summary line, the Prometheus endpoint, and
that neither ever carries a secret."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from alerts.outbox import DispatchReport
from monitor.metrics import CYCLE_EVENT, Metrics, PollCycle, percentile
from monitor.pipeline import FeedReport
from tests.conftest import fixture, write_config
from tests.servers import FeedServer, SlackServer

ARS = "arstechnica_2024-04-01_rss2.xml"  # 20 items, 5 mention AI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of http://127.0.0.1:port/metrics: (name, labels) -> value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def cycle_lines(stderr: str) -> list[dict]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line["msg"] == CYCLE_EVENT]


@pytest.mark.parametrize(
    "values, p, expected",
    [
        ([], 50, 0),
        ([40], 95, 40),
        ([30, 10, 20], 50, 20),
        (list(range(1, 101)), 95, 95),
        (list(range(1, 101)), 50, 50),
        ([5, 900], 95, 900),
    ],
)
def test_percentile_is_nearest_rank(values: list[int], p: float, expected: int) -> None:
    assert percentile(values, p) == expected


def test_poll_cycle_counts_outcomes_items_and_timings() -> None:
    now = [100.0]
    cycle = PollCycle(clock=lambda: now[0])
    for report in [
        FeedReport("a", "ok", new_items=4, matches=2, deliveries=3, ms=120),
        FeedReport("b", "unchanged", ms=20),
        FeedReport("c", "failed", error="timed out", ms=5000),
        FeedReport("d", "gone", error="gone (410)", ms=30),
    ]:
        cycle.record(report)
    cycle.record_lag(0.25)
    now[0] = 160.4
    assert cycle.fields() == {
        "feeds": 4, "ok": 1, "not_modified": 1, "failed": 2, "new_items": 4, "matches": 2,
        "deliveries": 3, "p50_ms": 30, "p95_ms": 5000, "lag_max_ms": 250, "seconds": 60,
    }  # fmt: skip
    assert "lag_max_ms" not in cycle.fields(with_lag=False)


def test_two_services_in_one_process_keep_separate_metrics() -> None:
    first, second = Metrics(), Metrics()  # the global registry would refuse the second
    first.record_poll(FeedReport("a", "ok", new_items=3, ms=10))
    assert first.registry.get_sample_value("reelwatch_items_stored_total") == 3
    assert second.registry.get_sample_value("reelwatch_items_stored_total") == 0


def test_dispatch_results_are_counted_waiting_apart_from_retrying() -> None:
    """A later report held until its story's alert is sent is not a failed attempt."""
    metrics = Metrics()
    metrics.record_dispatch(DispatchReport(sent=2, retrying=1, waiting=3))
    metrics.record_dispatch(DispatchReport(waiting=1, failed=1))
    value = metrics.registry.get_sample_value
    counts = {r: value("reelwatch_deliveries_dispatched_total", {"result": r})
              for r in ("sent", "retrying", "waiting", "failed")}  # fmt: skip
    assert counts == {"sent": 2, "retrying": 1, "waiting": 4, "failed": 1}


def test_run_serves_metrics_that_count_polls_and_logs_a_json_cycle_line(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, {"ars": feed_server.add("/ars.xml", fixture(ARS))})
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "run", "--config", str(config),
         "--metrics-port", str(port), "--summary-every", "1s", "--log-format", "json"],
        env=dict(os.environ),  # no Slack: alerts are printed
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    samples: dict = {}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                samples = scrape(port)
            except httpx.TransportError:  # not listening yet
                samples = {}
            if samples.get(("reelwatch_deliveries", (("status", "sent"),))) == 5:
                break
            time.sleep(0.2)
        time.sleep(1.5)  # a summary line is due every second
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert samples.get(("reelwatch_polls_total", (("outcome", "ok"),)), 0) >= 1, err
    assert samples[("reelwatch_polls_total", (("outcome", "failed"),))] == 0
    assert samples[("reelwatch_items_stored_total", ())] == 20
    assert samples[("reelwatch_matches_total", ())] == 5
    assert samples[("reelwatch_deliveries_queued_total", ())] == 5
    assert samples[("reelwatch_deliveries", (("status", "sent"),))] == 5
    assert samples[("reelwatch_deliveries", (("status", "pending"),))] == 0
    assert samples[("reelwatch_poll_duration_seconds_count", ())] >= 1
    assert samples[("reelwatch_scheduler_lag_seconds", ())] >= 0
    assert out.count("ALERT ") == 5

    lines = cycle_lines(err)
    assert lines, err
    first = lines[0]
    assert first["level"] == "info" and first["logger"] == "monitor.scheduler"
    assert first["feeds"] == first["ok"] == 1
    assert (first["not_modified"], first["failed"]) == (0, 0)
    assert (first["new_items"], first["matches"], first["deliveries"]) == (20, 5, 5)
    assert 0 < first["p50_ms"] <= first["p95_ms"]
    assert first["lag_max_ms"] >= 0
    assert sum(line["feeds"] for line in lines) == samples[("reelwatch_polls_total",
                                                             (("outcome", "ok"),))]  # fmt: skip
    # every line is JSON, the storage process's too (started before logging was set up)
    records = [json.loads(line) for line in err.splitlines()]
    assert any(r["logger"] == "storage.migrate" for r in records), err


def test_metrics_port_in_use_is_refused_with_exit_1(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, {"ars": feed_server.add("/ars.xml", fixture(ARS))})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "monitor", "run", "--config", str(config),
             "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr


TOKEN = "xoxb-SECRET-TOKEN-7f3c91"
PASSWORD = "SECRET-PASSWORD-a81b"
HOOK = "SECRET-HOOK-5d2e"


@pytest.mark.parametrize("transport, log_format", [("bot", "text"), ("webhook", "json")])
def test_poll_never_prints_a_token_webhook_url_or_password(
    transport: str, log_format: str, feed_server: FeedServer, slack_server: SlackServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    config = write_config(
        tmp_path,
        {"ars": feed_server.add("/ars.xml", fixture(ARS))},
        extra='slack:\n  default_channel: "#ai-news"\n',
    )
    webhook = f"{slack_server.base}/services/T0SECRET/B0SECRET/{HOOK}"
    env = dict(os.environ) | {
        "REELWATCH_SLACK_WEBHOOK_URL": webhook,
        "REELWATCH_SMTP_PASSWORD": PASSWORD,
        "REELWATCH_SMTP_USER": "reelwatch@example.org",
    }
    if transport == "bot":
        # not the token the Slack server knows: every alert is refused (invalid_auth)
        env |= {"REELWATCH_SLACK_BOT_TOKEN": TOKEN, "REELWATCH_SLACK_API_URL": slack_server.api_url}
    else:
        slack_server.fail_next(503, b"busy")  # a failure, then working sends
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "poll", "--config", str(config),
         "--log-level", "debug", "--log-format", log_format],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # the secrets were used, and failures logged: a refused token once (the poll's other
    # alerts fail alike, unsent), a webhook's failed send and then its four others
    assert len(slack_server.attempts) == (1 if transport == "bot" else 5)
    assert ("delivery failed" if transport == "bot" else "delivery will be retried") in done.stderr
    assert "poll cycle" in done.stderr
    for secret in (TOKEN, PASSWORD, HOOK, webhook, "T0SECRET", "B0SECRET"):
        assert secret not in done.stdout
        assert secret not in done.stderr
