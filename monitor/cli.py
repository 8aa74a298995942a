"""The `reelwatch` command. Exit status: 0 success, 1 failure, 2 bad usage or config."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from monitor import __version__
from monitor.config import (
    Config,
    StartRefusal,
    applied_key,
    config_path,
    load_config,
    parse_config,
    parse_duration,
    read_config,
)
from monitor.decide import gone_at
from monitor.errors import ConfigError
from monitor.logs import setup_logging
from monitor.normalize import shown_url

log = logging.getLogger("reelwatch")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _duration_arg(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except Exception:
        raise argparse.ArgumentTypeError(f"'{text}' is not a duration like 7d or 12h") from None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="PATH",
        help="feeds.yaml to use (default: $REELWATCH_CONFIG or ./feeds.yaml)",
    )  # fmt: skip
    common.add_argument("--log-format", choices=["text", "json"], default="text")
    common.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("--format", choices=["table", "json"], default="table")

    parser = argparse.ArgumentParser(
        prog="reelwatch", description="Monitor feeds for news about AI in entertainment."
    )
    parser.add_argument("--version", action="version", version=f"reelwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", parents=[common], help="poll every feed on schedule and send alerts"
    )
    run.add_argument(
        "--worker", action="store_true", help="one of several processes sharing work (PostgreSQL)"
    )
    run.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on this port"
    )
    run.add_argument(
        "--metrics-host", default="127.0.0.1", metavar="ADDR",
        help="the address to serve metrics on (default 127.0.0.1: this machine only)",
    )  # fmt: skip
    run.add_argument(
        "--summary-every", type=_duration_arg, default=timedelta(minutes=1), metavar="AGE",
        help="log a summary of the polls this often (default 1m)",
    )  # fmt: skip

    poll = sub.add_parser("poll", parents=[common], help="poll feeds once, send alerts, exit")
    poll.add_argument("--feed", metavar="NAME", action="append", help="only this feed (repeatable)")

    feeds = sub.add_parser("feeds", help="inspect feeds.yaml and the feeds' state")
    feeds_sub = feeds.add_subparsers(dest="feeds_command", required=True, metavar="COMMAND")
    feeds_sub.add_parser(
        "check", parents=[common, listing], help="validate feeds.yaml and show each feed's state"
    )
    feeds_sub.add_parser(
        "status", parents=[common, listing], help="each feed's health: failures, silence, volume"
    )
    feeds_add = feeds_sub.add_parser(
        "add", parents=[common], help="add a feed (or a site's feed) to feeds.yaml"
    )
    feeds_add.add_argument("url", help="the feed's URL, or a web page that links its feed")
    feeds_add.add_argument("--name", type=_name_arg, help="default: derived from the feed's title")
    feeds_add.add_argument("--language", type=_language_arg, metavar="CODE")
    feeds_add.add_argument("--tags", type=_tags_arg, metavar="A,B", help="comma-separated")
    feeds_add.add_argument("--interval", type=_interval_arg, metavar="DURATION")
    feeds_remove = feeds_sub.add_parser(
        "remove", parents=[common], help="remove a feed from feeds.yaml (stored items are kept)"
    )
    feeds_remove.add_argument("name")
    feeds_import = feeds_sub.add_parser(
        "import", parents=[common], help="add the feeds of an OPML file that feeds.yaml lacks"
    )
    feeds_import.add_argument("file", metavar="FILE.opml")
    feeds_export = feeds_sub.add_parser(
        "export", parents=[common], help="write the feeds as OPML 2.0 (stdout by default)"
    )
    feeds_export.add_argument("--out", metavar="FILE")

    items = sub.add_parser("items", parents=[common, listing], help="list stored items")
    items.add_argument("--since", type=_duration_arg, default=timedelta(days=7), metavar="AGE",
                       help="published within this long (default 7d)")  # fmt: skip
    items.add_argument("--topic", metavar="ID")
    items.add_argument("--feed", metavar="NAME")
    items.add_argument("--limit", type=int, default=50, metavar="N")

    slack = sub.add_parser("slack", help="check the Slack set-up")
    slack_sub = slack.add_subparsers(dest="slack_command", required=True, metavar="COMMAND")
    slack_test = slack_sub.add_parser(
        "test", parents=[common], help="send a test message and say what Slack answered"
    )
    slack_test.add_argument("--channel", help="default: slack.default_channel")

    deliveries = sub.add_parser(
        "deliveries",
        parents=[common, listing],
        help="list the alert outbox: what is stuck, and why",
    )
    deliveries.add_argument("--status", choices=["pending", "failed", "sent"])
    deliveries.add_argument("--limit", type=int, default=100, metavar="N")
    deliveries.add_argument(
        "--retry", nargs="*", type=int, metavar="ID",
        help="send failed alerts again (the given ids, or every failed one) once the cause "
        "(token, channel, invitation) is fixed",
    )  # fmt: skip
    deliveries.add_argument(
        "--to-channel", metavar="CHANNEL",
        help="with --retry: send them to this channel instead (the old one was wrong)",
    )  # fmt: skip

    classify = sub.add_parser(
        "classify", parents=[common, listing], help="show which topics a text matches, and why"
    )
    classify.add_argument("title")
    classify.add_argument("summary", nargs="?", default="")
    classify.add_argument("--lang", metavar="CODE", help="its language (default: guessed)")

    reclassify = sub.add_parser(
        "reclassify", parents=[common], help="re-run the current topics over stored items"
    )
    reclassify.add_argument(
        "--since", type=_duration_arg, default=timedelta(days=30), metavar="AGE"
    )
    reclassify.add_argument(
        "--dry-run", action="store_true", help="change nothing; show what would"
    )
    reclassify.add_argument(
        "--alert", action="store_true", help="alert on old items that become relevant"
    )

    health = sub.add_parser(
        "health", parents=[common], help="exit 1 when the scheduler is not alive"
    )
    health.add_argument(
        "--max-age", type=_duration_arg, default=timedelta(minutes=2), metavar="AGE"
    )
    stories = sub.add_parser(
        "stories", parents=[common, listing], help="news events: reports grouped across outlets"
    )
    stories.add_argument("--since", type=_duration_arg, default=timedelta(days=7), metavar="AGE",
                         help="first seen within this age (default 7d)")  # fmt: skip
    stories.add_argument("--limit", type=int, default=200)
    digest = sub.add_parser("digest", help="preview and send email digests")
    digest_sub = digest.add_subparsers(dest="digest_command", required=True, metavar="COMMAND")
    period_help = "last-week (the last complete scheduled period) or YYYY-MM-DD..YYYY-MM-DD"
    preview = digest_sub.add_parser(
        "preview", parents=[common], help="render a digest (HTML and text) without sending"
    )
    preview.add_argument("name")
    preview.add_argument("--period", default="last-week", help=period_help)
    preview.add_argument("--out", metavar="FILE.html",
                         help="write the HTML here and the text beside it (.txt); "
                              "default: the text on stdout")  # fmt: skip
    send = digest_sub.add_parser("send", parents=[common], help="send a digest by email")
    send.add_argument("name")
    send.add_argument("--period", default="last-week", help=period_help)
    send.add_argument("--dry-run", action="store_true", help="render and report; send nothing")
    send.add_argument("--force", action="store_true", help="send even if already sent")
    db = sub.add_parser("db", help="the database's schema (migrations)")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    db_sub.add_parser(
        "upgrade", parents=[common], help="migrate the database to this release's schema"
    )
    db_sub.add_parser("current", parents=[common], help="print the database's schema revision")
    return parser


# The modules a command needs beyond the CLI's own, imported before it starts when
# main() is given after_imports (see monitor.launch); the others import on use.
_COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "run": ("monitor.scheduler", "monitor.pipeline", "alerts.outbox", "storage.remote"),
    "poll": ("monitor.pipeline", "alerts.outbox", "storage.remote"),
    "feeds": ("storage.repo",),
    "items": ("storage.repo",),
    "health": ("storage.repo",),
    "deliveries": ("storage.repo",),
    "reclassify": ("storage.repo", "monitor.pipeline"),
    "digest": ("storage.repo", "alerts.digest"),
    "stories": ("storage.repo",),
    "db": ("storage.repo",),
}


def main(
    argv: Sequence[str] | None = None,
    *,
    after_imports: Callable[[], None] | None = None,
    storage: Any = None,
) -> int:
    """Runs one command and returns its exit status. `after_imports`, when given, is
    called once the command's modules are imported, before it starts. `storage`: the
    storage process monitor.launch started for `poll` or `run` before any import."""
    args = build_parser().parse_args(argv)
    args.storage = storage
    if after_imports is not None:
        for module in _COMMAND_MODULES.get(args.command, ()):
            importlib.import_module(module)
        after_imports()
    setup_logging(args.log_format, args.log_level)
    if storage is not None:
        storage.log_as(args.log_format, args.log_level)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "poll":
            return cmd_poll(args)
        if args.command == "feeds" and args.feeds_command == "status":
            return cmd_feeds_status(args)
        if args.command == "feeds" and args.feeds_command in _FEEDS_EDITS:
            return _FEEDS_EDITS[args.feeds_command](args)
        if args.command == "feeds":
            return cmd_feeds_check(args)
        if args.command == "items":
            return cmd_items(args)
        if args.command == "health":
            return cmd_health(args)
        if args.command == "classify":
            return cmd_classify(args)
        if args.command == "deliveries":
            return cmd_deliveries(args)
        if args.command == "slack":
            return cmd_slack_test(args)
        if args.command == "reclassify":
            return cmd_reclassify(args)
        if args.command == "digest":
            return cmd_digest(args)
        if args.command == "stories":
            return cmd_stories(args)
        if args.command == "db":
            return cmd_db(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    raise AssertionError(args.command)


def _load(args: argparse.Namespace) -> Config:
    return load_config(config_path(args.config))


def _repo() -> Any:
    from storage import Repository, make_engine

    repo = Repository(make_engine())
    repo.create_schema()
    return repo


def cmd_run(args: argparse.Namespace) -> int:
    from alerts.slack import SlackSettings
    from monitor.pipeline import Poller
    from monitor.scheduler import Service
    from storage.types import DatabaseLockedError

    if args.worker:
        repo = _repo()
        config, text, refused = _start_config(config_path(args.config), repo)
        return _run_worker(args, config, repo, SlackSettings.from_env(), text, refused)
    with _storage(args) as repo:
        slack = SlackSettings.from_env()
        repo.create_schema()
        try:
            with repo.exclusive_run():
                repo.release_leases()  # the one run on this database: nothing is held by others
                config, text, refused = _start_config(config_path(args.config), repo)
                poller = Poller(config, repo, router=_router(config, slack))
                return _run_service(Service, args, config, poller, slack, storage=repo,
                                    text=text, refused=refused)  # fmt: skip
        except DatabaseLockedError as exc:
            print(f"reelwatch run: {exc}", file=sys.stderr)
            return EXIT_FAILURE


def _start_config(path: Path, repo: Any) -> tuple[Config, str | None, StartRefusal | None]:
    """feeds.yaml to start on, kept as the last applied; or, if the file is broken now,
    the one last applied, and what is wrong with the file: a restart after a bad edit
    goes on monitoring and says so (with no good copy kept, it refuses as ever). And the
    file's text as read (None: unreadable): the service's watch applies any other."""
    from monitor.pipeline import utcnow

    try:
        config, text = read_config(path)
    except ConfigError as exc:
        saved = repo.applied_config(applied_key(path))
        if saved is None:
            raise
        applied, applied_at = saved
        read = None
        with contextlib.suppress(OSError, UnicodeDecodeError):
            read = path.read_text(encoding="utf-8")
        try:
            return parse_config(applied, str(path)), read, StartRefusal(exc, applied_at)
        except ConfigError:  # kept by an older release that read it otherwise
            raise exc from None
    repo.save_applied_config(applied_key(path), text, utcnow())
    return config, text, None


def _storage(args: argparse.Namespace) -> Any:
    """The repository in a process of its own (storage.remote), stopped when the command
    ends: the one monitor.launch started, or one started now, before feeds.yaml is read
    (its imports overlap)."""
    if args.storage is not None:
        return args.storage
    from storage.remote import RemoteRepository

    return RemoteRepository()


def _run_worker(
    args: argparse.Namespace, config: Config, repo: Any, slack: Any, text: str | None,
    refused: StartRefusal | None,
) -> int:  # fmt: skip
    from monitor.pipeline import Poller
    from monitor.worker import WorkerService

    if repo.engine.dialect.name != "postgresql":
        print("reelwatch run --worker: several workers need PostgreSQL "
              "(REELWATCH_DATABASE_URL=postgresql+psycopg://...); with SQLite run one "
              "`reelwatch run`", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    poller = Poller(config, repo, router=_router(config, slack))
    return _run_service(WorkerService, args, config, poller, slack, text=text, refused=refused)


def _run_service(
    service: Any, args: argparse.Namespace, config: Config, poller: Any, slack: Any,
    *, storage: Any = None,  # a storage.remote.RemoteRepository whose death stops the service
    text: str | None = None,  # feeds.yaml's text as read at start
    refused: StartRefusal | None = None,  # feeds.yaml's problems, if it runs on a copy
) -> int:  # fmt: skip
    from monitor.metrics import Metrics, serve_metrics

    metrics = Metrics() if args.metrics_port is not None else None
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(serve_metrics(metrics, args.metrics_host, args.metrics_port))
        except OSError as exc:
            print(f"reelwatch run: cannot serve metrics on {args.metrics_host}:"
                  f"{args.metrics_port}: {exc.strerror or exc}", file=sys.stderr)  # fmt: skip
            return EXIT_FAILURE
        svc = service(config, poller, slack, config_path(args.config), metrics=metrics,
                      summary_every=args.summary_every, refused=refused,
                      config_text=text)  # fmt: skip
        asyncio.run(_serve(svc, storage))
    return EXIT_FAILURE if storage is not None and storage.died else EXIT_OK


async def _serve(service: Any, storage: Any) -> None:
    if storage is not None:
        loop = asyncio.get_running_loop()
        storage.on_death = lambda: loop.call_soon_threadsafe(service.stop)
    await service.run()


def cmd_poll(args: argparse.Namespace) -> int:
    with _storage(args) as repo:
        return _poll(args, repo)


def _poll(args: argparse.Namespace, repo: Any) -> int:
    from alerts.outbox import DispatchReport, Pacer, dispatch_all
    from alerts.slack import SlackSettings
    from monitor.metrics import CYCLE_EVENT, PollCycle, log_fields
    from monitor.pipeline import Poller, utcnow
    from storage.types import DatabaseLockedError, StorageError

    config = _load(args)
    feeds = [f for f in config.feeds if f.enabled]
    if args.feed:
        unknown = [n for n in args.feed if config.feed(n) is None]
        if unknown:
            print(
                f"reelwatch poll: no feed named {', '.join(unknown)} in feeds.yaml", file=sys.stderr
            )
            return EXIT_USAGE
        feeds = [config.feed(n) for n in args.feed]  # type: ignore[misc]
    slack = SlackSettings.from_env()
    cycle = PollCycle()
    try:
        repo.create_schema()
        with repo.exclusive_run():
            # read once the poll is ours: a poll that just ended elsewhere left newer ones
            states = repo.feed_states()
            gone = [f for f in feeds if gone_at(states.get(f.name), f.url)]
            for feed in gone:
                print(f"  {feed.name}: skipped, {states[feed.name].last_error}", file=sys.stderr)
            feeds = [f for f in feeds if f not in gone]
            poller = Poller(config, repo, router=_router(config, slack))
            poller.observers.append(cycle.record)
            pacer = Pacer()  # one for the whole poll: a channel's pace carries across passes

            def send(now: datetime, stopping: Callable[[], bool]) -> DispatchReport:
                return dispatch_all(repo, slack.sender_for, now, burst=config.slack.burst,
                                    pacer=pacer, stopping=stopping)  # fmt: skip

            summary, early = asyncio.run(_poll_with_progress(poller, feeds, states, send))
            last = send(utcnow(), lambda: False)
            # sent and failed happen once to a delivery; what is left to retry or waits is
            # what is pending now (an early pass's retry may have been sent since)
            pending = repo.delivery_counts().get("pending", 0)
            sent = DispatchReport(early.sent + last.sent, pending, early.failed + last.failed)
    except DatabaseLockedError as exc:
        print(f"reelwatch poll: {exc} (it polls on its own)", file=sys.stderr)
        return EXIT_FAILURE
    except StorageError as exc:
        print(f"reelwatch poll: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    log_fields(log, CYCLE_EVENT, cycle.fields(with_lag=False))
    print(
        f"feeds: {summary.count('ok')} ok, {summary.count('unchanged')} unchanged, "
        f"{summary.count('failed') + summary.count('gone')} failed; "
        f"new items: {summary.new_items}; matches: {summary.matches}; "
        f"deliveries: {sent.sent} sent, {sent.retrying + sent.waiting} to retry, "
        f"{sent.failed} failed"
    )
    for report in sorted(summary.reports, key=lambda r: r.feed):
        if report.error:
            print(f"  {report.feed}: {report.error}")
    failed = summary.count("failed") + summary.count("gone")
    return EXIT_FAILURE if feeds and failed == len(feeds) else EXIT_OK


# `reelwatch poll` sends what is due every so often while it polls, as `run` does: a
# first poll of many feeds alerts on the first ones read, not after the last
SEND_EVERY = 10.0  # seconds


async def _poll_with_progress(
    poller: Any, feeds: list[Any], states: Any, send: Callable[[datetime, Any], Any]
) -> tuple[Any, Any]:
    """The poll's summary, and what `send` (a dispatch pass, in a thread of its own: a
    slow Slack must not hold up storing) sent meanwhile. A pass under way when the poll
    is interrupted stops after the message it is sending (what it claimed waits for its
    claim to run out); at a poll's end it finishes."""
    import threading

    from tqdm import tqdm
    from tqdm.contrib import DummyTqdmFile
    from tqdm.contrib.logging import logging_redirect_tqdm

    from alerts.outbox import DispatchReport
    from monitor.pipeline import utcnow

    sent = DispatchReport()
    polled = asyncio.Event()
    stop = threading.Event()

    async def send_as_it_goes() -> None:
        nonlocal sent
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(polled.wait(), SEND_EVERY)
            if polled.is_set():
                return  # the rest is sent once the poll is over
            try:
                sent += await asyncio.to_thread(send, utcnow(), stop.is_set)
            except Exception as exc:  # the poll goes on; the last pass tries again
                log.error("sending alerts during the poll failed error=%r", str(exc))
                return

    sender = asyncio.create_task(send_as_it_goes())
    tty = sys.stdout.isatty()
    # on stdout, as the alerts printed without Slack: tqdm clears the bar for a line
    # written to its own stream (and to stderr)
    bar = tqdm(total=len(feeds), unit="feed", disable=not tty, leave=False, file=sys.stdout)
    with contextlib.ExitStack() as terminal:
        if tty:  # log lines and printed alerts (no Slack) go above the bar, not into it
            terminal.enter_context(logging_redirect_tqdm())
            terminal.enter_context(contextlib.redirect_stdout(DummyTqdmFile(sys.stdout)))
        try:
            summary = await poller.poll_many(feeds, on_done=lambda _r: bar.update(), states=states)
        except BaseException:  # interrupted (Ctrl-C): a pass under way stops after its message
            stop.set()
            raise
        finally:
            polled.set()
            bar.close()
            try:
                await sender  # a pass under way ends first: what it claimed, it sends
            finally:
                await poller.aclose()
    return summary, sent


def _router(config: Config, slack: Any) -> Any:
    from alerts.routing import make_router

    if slack.transport == "bot" and not config.slack.default_channel:
        log.warning(
            "REELWATCH_SLACK_BOT_TOKEN is set but slack.default_channel is not: relevant "
            "items that no route takes will not alert"
        )
    return make_router(config.slack, slack.transport)


def _fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _print_rows(rows: list[dict[str, Any]], fmt: str, columns: list[str]) -> None:
    if fmt == "json":
        for row in rows:
            print(json.dumps(row, ensure_ascii=False, default=str))
        return
    table = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in table]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return text if len(text) <= 70 else text[:69] + "…"


def cmd_feeds_check(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    config = load_config(path)
    states = _repo().feed_states()
    # gone (410) at the URL feeds.yaml gives: not polled until it is given a new one
    gone = {f.name for f in config.feeds if gone_at(states.get(f.name), f.url)}
    enabled = sum(1 for f in config.feeds if f.enabled and f.name not in gone)
    print(
        f"{path}: ok: {len(config.feeds)} feeds ({enabled} enabled"
        f"{f', {len(gone)} gone: give them a new url' if gone else ''}), "
        f"{len(config.topics)} topics",
        file=sys.stderr,
    )
    rows = []
    for feed in config.feeds:
        st = states.get(feed.name)
        rows.append(
            {
                "name": feed.name,
                "url": shown_url(feed.url),
                "enabled": feed.enabled and feed.name not in gone,
                "interval": f"{int(config.interval(feed).total_seconds() // 60)}m",
                "last_status": st.last_status if st else "never polled",
                "last_success": _fmt_time(st.last_success) if st else None,
                "failures": st.consecutive_failures if st else 0,
                "next_poll": _fmt_time(st.next_poll) if st else None,
                "error": (st.last_error or st.warning) if st else None,
            }
        )
    _print_rows(rows, args.format, list(rows[0]) if rows else ["name"])
    return EXIT_OK


def cmd_feeds_status(args: argparse.Namespace) -> int:
    from monitor.health import feed_health
    from monitor.pipeline import utcnow

    config = _load(args)
    health = feed_health(config, _repo(), utcnow())
    rows = []
    for feed in config.feeds:
        h = health.get(feed.name)  # None: disabled in feeds.yaml
        st, act = (h.state, h.activity) if h else (None, None)
        flags = h.flags if h else ["disabled in feeds.yaml"]
        rows.append(
            {
                "name": feed.name,
                "status": st.last_status if st else None,
                "last_success": st.last_success.isoformat() if st and st.last_success else None,
                "failures": st.consecutive_failures if st else 0,
                "error": st.last_error if st else None,
                "items_7d": act.items_recent if act else 0,
                "matches_7d": act.matched_recent if act else 0,
                "mean_ms": round(st.mean_poll_ms) if st and st.mean_poll_ms is not None else None,
                "next_poll": st.next_poll.isoformat() if st and st.next_poll else None,
                "flags": flags,
            }
        )
    if args.format == "table":
        for row in rows:
            for key in ("last_success", "next_poll"):
                row[key] = row[key][:16].replace("T", " ") if row[key] else None
    columns = ["name", "status", "last_success", "failures", "items_7d", "matches_7d",
               "mean_ms", "next_poll", "flags", "error"]  # fmt: skip
    _print_rows(rows, args.format, columns)
    return EXIT_OK


# -- feeds add / remove / import / export: edits to feeds.yaml (monitor.feedsfile) --------


def _language_arg(text: str) -> str:
    from monitor.normalize import language_code

    code = language_code(text)
    if code is None:
        raise argparse.ArgumentTypeError(f"'{text}' is not an ISO 639-1 code like en or it")
    return code


def _tags_arg(text: str) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))


def _interval_arg(text: str) -> str:
    if _duration_arg(text) < timedelta(minutes=1):
        raise argparse.ArgumentTypeError(f"'{text}' is under a minute (1m at least)")
    return text.strip()  # written to feeds.yaml as the user typed it


def _name_arg(text: str) -> str:
    """A feed's name, checked before anything is fetched (feeds.yaml's rule)."""
    import re

    from monitor.config import _NAME_PATTERN

    if not re.fullmatch(_NAME_PATTERN, text):
        raise argparse.ArgumentTypeError(
            f"'{text}': names are letters, digits and - _ . (no spaces; up to 64 "
            "characters, starting with a letter or digit)"
        )
    return text


def _feed_with_url(config: Config, url: str) -> Any:
    from monitor.feedsfile import same_feed_key

    key = same_feed_key(url)
    return next((f for f in config.feeds if same_feed_key(f.url) == key), None)


def _write_edit(command: str, path: Any, text: str, expected: str) -> int | None:
    """Write an edited feeds.yaml; on refusal say why (nothing is written) and return the exit."""
    from monitor.feedsfile import FeedsFileError, write_feeds_file

    try:
        write_feeds_file(path, text, expected=expected)
    except ConfigError as exc:
        print(
            f"reelwatch feeds {command}: not written, {path} would not be valid:", file=sys.stderr
        )
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except FeedsFileError as exc:
        print(f"reelwatch feeds {command}: {path} not changed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return None


def cmd_feeds_add(args: argparse.Namespace) -> int:
    from collections import Counter
    from urllib.parse import urlsplit

    from monitor.discover import find_feed
    from monitor.errors import FeedError
    from monitor.feedsfile import FeedsFileError, add_entries, derive_name, read_feeds_file
    from monitor.fetch import Fetcher
    from monitor.normalize import is_http_url
    from monitor.pipeline import utcnow

    path = config_path(args.config)
    text, config = read_feeds_file(path)
    url = args.url.strip() if "://" in args.url else "https://" + args.url.strip()
    if not is_http_url(url):
        print(f"reelwatch feeds add: '{args.url}' is not an http(s) URL", file=sys.stderr)
        return EXIT_USAGE
    if args.name and config.feed(args.name):
        print(f"reelwatch feeds add: {path} has a feed named {args.name!r}", file=sys.stderr)
        return EXIT_FAILURE
    if same := _feed_with_url(config, url):
        print(f"reelwatch feeds add: {url} is in {path} as {same.name!r}", file=sys.stderr)
        return EXIT_FAILURE

    async def find() -> Any:
        d = config.defaults
        fetcher = Fetcher(user_agent=d.user_agent, max_body_bytes=d.max_body_bytes,
                          allow_private_networks=d.allow_private_networks)  # fmt: skip
        try:
            timeout = d.timeout.total_seconds()
            return await find_feed(url, fetcher=fetcher, timeout=timeout, now=utcnow())
        finally:
            await fetcher.aclose()

    try:
        found = asyncio.run(find())
    except FeedError as exc:
        print(f"reelwatch feeds add: {url}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    parsed = found.parsed
    newest = max((i.published for i in parsed.items), default=None)
    read_as = Counter(i.language for i in parsed.items if i.language).most_common(1)
    declared, guessed = parsed.language, read_as[0][0] if read_as else None
    language = declared or (f"{guessed} (guessed from its items)" if guessed else "-")
    if declared and guessed and guessed != declared and not args.language:
        language += f" (declared, but its items read as {guessed}: pass --language {guessed}?)"
    print(f"found {found.url} ({found.via})")
    print(f"  title:    {parsed.title or '-'}")
    print(f"  items:    {len(parsed.items)}")
    print(f"  newest:   {newest.strftime('%Y-%m-%d %H:%M UTC') if newest else '-'}")
    print(f"  language: {language}")
    if same := _feed_with_url(config, found.url):
        print(f"reelwatch feeds add: {found.url} is in {path} as {same.name!r}", file=sys.stderr)
        return EXIT_FAILURE
    name = args.name or derive_name(
        parsed.title, urlsplit(found.url).hostname or "", [f.name for f in config.feeds]
    )
    entry = {"name": name, "url": found.url, "language": args.language}
    entry |= {"tags": args.tags, "interval": args.interval}
    try:
        edited = add_entries(text, [entry])
    except FeedsFileError as exc:
        print(f"reelwatch feeds add: {path} not changed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if (refused := _write_edit("add", path, edited, text)) is not None:
        return refused
    print(f"added {name!r} to {path}")
    return EXIT_OK


def cmd_feeds_remove(args: argparse.Namespace) -> int:
    from difflib import get_close_matches

    from monitor.feedsfile import FeedsFileError, read_feeds_file, remove_entry

    path = config_path(args.config)
    text, config = read_feeds_file(path)
    feed = config.feed(args.name)
    if feed is None:
        close = get_close_matches(args.name, [f.name for f in config.feeds], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        print(
            f"reelwatch feeds remove: no feed named {args.name!r} in {path}{hint}", file=sys.stderr
        )
        return EXIT_FAILURE
    try:
        edited = remove_entry(text, args.name)
    except FeedsFileError as exc:
        print(f"reelwatch feeds remove: {path} not changed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if (refused := _write_edit("remove", path, edited, text)) is not None:
        return refused
    print(f"removed {feed.name!r} ({shown_url(feed.url)}) from {path}; its stored items are kept")
    return EXIT_OK


def cmd_feeds_import(args: argparse.Namespace) -> int:
    from monitor.feedsfile import FeedsFileError, add_entries, read_feeds_file
    from monitor.opml import MAX_OPML_BYTES, OpmlError, parse_opml, plan_import

    path = config_path(args.config)
    text, config = read_feeds_file(path)
    try:
        with open(args.file, "rb") as f:
            data = f.read(MAX_OPML_BYTES + 1)
        outlines = parse_opml(data)
    except OSError as exc:
        print(f"reelwatch feeds import: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    except OpmlError as exc:
        print(f"reelwatch feeds import: {args.file}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    plan = plan_import(outlines, [(f.name, f.url) for f in config.feeds])
    if plan.added:
        try:
            edited = add_entries(text, plan.added)
        except FeedsFileError as exc:
            print(f"reelwatch feeds import: {path} not changed: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        if (refused := _write_edit("import", path, edited, text)) is not None:
            return refused
    for entry in plan.added:
        tags = f"  [{', '.join(entry['tags'])}]" if entry.get("tags") else ""
        print(f"added    {entry['name']}  {entry['url']}{tags}")
    for outline, why in plan.skipped:
        print(f"skipped  {outline.title or '-'}  {outline.url}: {why}")
    print(f"{len(plan.added)} added to {path}, {len(plan.skipped)} skipped")
    return EXIT_OK


def cmd_feeds_export(args: argparse.Namespace) -> int:
    from monitor.opml import ExportFeed, render_opml
    from monitor.pipeline import utcnow

    config = _load(args)
    feeds = [ExportFeed(f.name, f.url, tuple(f.tags), f.language) for f in config.feeds]
    data = render_opml(feeds, title="reelwatch feeds", created=utcnow())
    if not args.out:
        sys.stdout.write(data.decode())
        return EXIT_OK
    try:
        with open(args.out, "wb") as f:
            f.write(data)
    except OSError as exc:
        print(f"reelwatch feeds export: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"exported {len(feeds)} feeds to {args.out}", file=sys.stderr)
    return EXIT_OK


_FEEDS_EDITS = {
    "add": cmd_feeds_add,
    "remove": cmd_feeds_remove,
    "import": cmd_feeds_import,
    "export": cmd_feeds_export,
}


def cmd_items(args: argparse.Namespace) -> int:
    from monitor.pipeline import utcnow

    config = _load(args)
    if args.topic and args.topic not in config.topics:
        known = ", ".join(config.topics) or "none"
        print(
            f"reelwatch items: no topic {args.topic!r} in feeds.yaml (topics: {known})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    stored = _repo().list_items(
        since=utcnow() - args.since, topic=args.topic, feed=args.feed, limit=args.limit
    )
    rows = []
    for s in stored:
        item = s.item
        rows.append(
            {
                "id": s.id,
                "feed": item.feed,
                "guid": item.guid or item.identity,
                "title": item.title,
                "url": item.url,
                "published": item.published.isoformat(),
                "language": item.language,
                "relevant": bool(s.matches),
                "topics": [m.topic for m in s.matches],
                "terms": list(dict.fromkeys(t for m in s.matches for t in m.terms)),
                "score": max((m.score for m in s.matches), default=0.0),
                "matches": [_match_json(m) for m in s.matches],
            }
        )
    if args.format == "table" and not rows:
        scope = (f" in topic {args.topic!r}" if args.topic else "") + (
            f" from {args.feed!r}" if args.feed else ""
        )
        print(
            f"no items{scope} published in the last {_fmt_span(args.since)}"
            " (widen with --since, e.g. --since 90d)",
            file=sys.stderr,
        )
        return EXIT_OK
    if args.format == "table":
        for row in rows:
            row["published"] = row["published"][:16].replace("T", " ")
        _print_rows(rows, "table", ["id", "published", "feed", "language", "topics", "title"])
    else:
        _print_rows(rows, "json", [])
    return EXIT_OK


def _fmt_span(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _match_json(m: Any) -> dict[str, Any]:
    return {
        "topic": m.topic,
        "score": m.score,
        "terms": list(m.terms),
        "positions": [{"term": t, "field": f, "offset": o} for t, f, o in m.positions],
    }


def cmd_slack_test(args: argparse.Namespace) -> int:
    from alerts.slack import SlackMessage, SlackSettings
    from monitor.errors import DeliveryError

    config = _load(args)
    slack = SlackSettings.from_env()
    if slack.transport == "console":
        print(
            "Slack is not set up: set REELWATCH_SLACK_BOT_TOKEN (and slack.default_channel "
            "in feeds.yaml) or REELWATCH_SLACK_WEBHOOK_URL",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    channel = "webhook"
    if slack.transport == "bot":
        channel = args.channel or config.slack.default_channel or ""
        if not channel:
            print("no channel: pass --channel or set slack.default_channel", file=sys.stderr)
            return EXIT_USAGE
    text = "reelwatch test message: alerts will arrive here."
    message = SlackMessage(text, [{"type": "section", "text": {"type": "mrkdwn", "text": text}}])
    try:
        slack.sender_for(channel).send(channel, message)
    except DeliveryError as exc:
        where = "the webhook" if channel == "webhook" else channel
        print(f"Slack refused the test message for {where}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    where = "the webhook's channel" if channel == "webhook" else channel
    print(f"ok: Slack accepted the test message in {where}")
    return EXIT_OK


def cmd_deliveries(args: argparse.Namespace) -> int:
    _load(args)  # a broken feeds.yaml is reported here too
    if args.retry is not None:
        from monitor.pipeline import utcnow

        ids = args.retry or None
        count = _repo().retry_failed_deliveries(ids, utcnow(), channel=args.to_channel)
        if count:
            print(f"{count} failed alert(s) queued again: `reelwatch run` sends them within 10 s")
        asked = sorted(set(ids or ()))
        if ids is not None and count < len(asked):
            print(
                f"{len(asked) - count} of the alerts {', '.join(map(str, asked))} not queued: "
                "not failed (or, with --to-channel, owed to that channel already); "
                "`reelwatch deliveries --status failed` lists the failed ones"
            )
        elif not count:
            print("no failed alerts: nothing to send again")
        return EXIT_OK
    rows = [
        {
            "id": d.id,
            "status": d.status,
            "channel": d.channel,
            "attempts": d.attempts,
            "next_attempt": d.next_attempt.isoformat() if d.status == "pending" else None,
            "sent_at": d.sent_at.isoformat() if d.sent_at else None,
            "item": d.item_id,
            "feed": d.feed,
            "title": d.title,
            "error": d.last_error,
        }
        for d in _repo().deliveries(args.status, args.limit)
    ]
    columns = ["id", "status", "channel", "attempts", "next_attempt", "feed", "title", "error"]
    _print_rows(rows, args.format, columns)
    return EXIT_OK


def cmd_classify(args: argparse.Namespace) -> int:
    from monitor.classify import compile_rules
    from monitor.classify.text import guess_language
    from monitor.normalize import SUMMARY_MAX, TITLE_MAX, clean_text, language_code
    from monitor.pipeline import utcnow
    from monitor.types import Item

    config = _load(args)
    title, summary = clean_text(args.title, TITLE_MAX), clean_text(args.summary, SUMMARY_MAX)
    language = language_code(args.lang) or guess_language(f"{title} {summary}")
    item = Item("cli", "cli", None, None, title, summary, utcnow(), language)
    matches = compile_rules(config.rules()).classify(item)
    if args.format == "json":
        out = {"language": language, "relevant": bool(matches)}
        out["matches"] = [_match_json(m) for m in matches]
        print(json.dumps(out, ensure_ascii=False))
        return EXIT_OK
    if not matches:
        print(f"no topic matched (language: {language or 'unknown'})")
        return EXIT_OK
    print(f"relevant (language: {language or 'unknown'})")
    for m in matches:
        print(f"{m.topic}  score {m.score:g}  ({config.topics[m.topic].label})")
        for term, fld, offset in m.positions:
            print(f"    {term!r} in {fld} at {offset}")
    return EXIT_OK


def cmd_reclassify(args: argparse.Namespace) -> int:
    from alerts.slack import SlackSettings
    from monitor.classify import compile_rules
    from monitor.pipeline import utcnow

    config = _load(args)
    repo = _repo()
    classifier = compile_rules(config.rules())
    stored = repo.list_items(since=utcnow() - args.since, limit=None)
    gained: dict[str, list[str]] = {}
    lost: dict[str, list[str]] = {}
    changes: dict[int, tuple[Any, ...]] = {}
    newly_relevant: list[int] = []
    for s in stored:
        new = classifier.classify(s.item)
        before, after = {m.topic for m in s.matches}, {m.topic for m in new}
        for topic in after - before:
            gained.setdefault(topic, []).append(s.item.title)
        for topic in before - after:
            lost.setdefault(topic, []).append(s.item.title)
        if new != s.matches:
            changes[s.id] = new
            if new and not s.matches:
                newly_relevant.append(s.id)
    verb = "would" if args.dry_run else "now"
    print(f"{len(stored)} items since {args.since.days}d; {len(changes)} {verb} change")
    for topic in sorted(set(gained) | set(lost)):
        plus, minus = gained.get(topic, []), lost.get(topic, [])
        print(f"  {topic}: +{len(plus)} {verb} match, -{len(minus)} {verb} stop matching")
        for sign, titles in (("+", plus), ("-", minus)):
            for title in titles[:3]:
                print(f"      {sign} {title[:100]}")
    if args.dry_run:
        return EXIT_OK
    repo.replace_matches(changes)
    if args.alert and newly_relevant:
        router = _router(config, SlackSettings.from_env())
        by_id = {s.id: s for s in stored}
        added = repo.add_deliveries(
            [
                (i, ch)
                for i in newly_relevant
                for ch in router.channels(by_id[i].item.feed, changes[i])
            ],
            utcnow(),
        )
        print(f"{added} alerts queued for items that became relevant")
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    from monitor.pipeline import utcnow
    from monitor.scheduler import HEARTBEAT

    beat = _repo().heartbeat(HEARTBEAT)
    if beat is None:
        print("unhealthy: the scheduler has never run against this database", file=sys.stderr)
        return EXIT_FAILURE
    age = utcnow() - beat
    if age > args.max_age:
        print(f"unhealthy: last heartbeat {int(age.total_seconds())} s ago", file=sys.stderr)
        return EXIT_FAILURE
    print(f"healthy: last heartbeat {int(age.total_seconds())} s ago")
    return EXIT_OK


def cmd_digest(args: argparse.Namespace) -> int:
    from alerts.digest import parse_period, run_digest
    from monitor.digests import digest_setups, flagged_feeds
    from monitor.errors import DeliveryError
    from monitor.pipeline import utcnow

    config = _load(args)
    if args.name not in config.digests:
        known = ", ".join(config.digests) or "none: add one under digests: in feeds.yaml"
        print(f"reelwatch digest: no digest named {args.name!r} (digests: {known})",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    now = utcnow()
    repo = _repo()
    (setup,) = digest_setups(config, flagged_feeds(config, repo, now), [args.name])
    try:
        period = parse_period(args.period, setup.schedule, setup.timezone, now)
    except ValueError as exc:
        print(f"reelwatch digest: --period {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.digest_command == "preview":
        result = run_digest(repo, setup, period, now=now, smtp=None, dry_run=True)
        if args.out:
            out = Path(args.out)
            out.write_text(result.html, encoding="utf-8")
            out.with_suffix(".txt").write_text(result.text, encoding="utf-8")
            print(f"wrote {out} and {out.with_suffix('.txt')}: {result.subject}")
        else:
            print(f"Subject: {result.subject}\n\n{result.text}")
        return EXIT_OK
    try:
        result = run_digest(repo, setup, period, now=now, smtp=None, force=args.force,
                            dry_run=args.dry_run)  # fmt: skip
    except DeliveryError as exc:
        print(f"reelwatch digest send: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(result.message)
    return EXIT_OK if result.status in ("sent", "already-sent", "dry-run") else EXIT_FAILURE


def cmd_stories(args: argparse.Namespace) -> int:
    from monitor.pipeline import utcnow

    _load(args)  # a broken feeds.yaml is reported, as by every command
    records = _repo().list_stories(utcnow() - args.since, args.limit)
    rows = [
        {"id": r.id, "title": r.title, "items": list(r.items), "outlets": list(r.outlets),
         "languages": list(r.languages), "first_seen": r.first_seen.isoformat(),
         "topics": list(r.topics)}
        for r in records
    ]  # fmt: skip
    if args.format == "table":
        for row in rows:
            row["items"] = len(row["items"])
            row["first_seen"] = row["first_seen"][:16].replace("T", " ")
            row["title"] = row["title"][:70]
    _print_rows(rows, args.format, ["id", "items", "outlets", "languages", "first_seen",
                                    "topics", "title"])  # fmt: skip
    return EXIT_OK


def cmd_db(args: argparse.Namespace) -> int:
    # the database comes from REELWATCH_DATABASE_URL, not feeds.yaml: a broken feeds.yaml
    # does not stop a migration
    from sqlalchemy.exc import SQLAlchemyError

    from storage import make_engine
    from storage.migrate import SchemaError, current_revision, head_revision, upgrade_schema

    engine = make_engine()
    where = engine.url.render_as_string(hide_password=True)
    try:
        if args.db_command == "current":
            revision = current_revision(engine)
            head = head_revision()
            if revision == head:
                print(f"{revision} (head)")
            else:
                print(f"{revision or 'none'} (head is {head}: run reelwatch db upgrade)")
            return EXIT_OK
        done = upgrade_schema(engine)
    except (SchemaError, SQLAlchemyError) as exc:
        print(f"reelwatch db {args.db_command}: {where}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        engine.dispose()
    if not done.changed:
        print(f"{where}: already at {done.after} (head)")
    elif done.predates_migrations:
        print(f"{where}: upgraded from none (tables made before migrations) to {done.after}")
    else:
        print(f"{where}: upgraded from {done.before or 'none (empty)'} to {done.after}")
    return EXIT_OK
