"""Benchmark: one whole `reelwatch poll` against a plain feedparser loop, in the same run.

What is measured
----------------
N feeds (``--feeds``, default 500) are generated from the real outlet documents in
tests/fixtures/*.xml: every feed is a valid RSS 2.0 document of 20-40 items and about
50-80 KB, built from the fixtures' entries (parsed once, before any timing) with each
item's guid, link and title rewritten with the feed's name, so every item is new on a
cold poll. A ThreadingHTTPServer in a separate process (its CPU never shares the
bench's GIL) serves them from 50 loopback addresses, 127.0.0.1 to 127.0.0.50 (a
monitor polls many sites, each with its own per-host limit), with HTTP/1.1 keep-alive,
Content-Length, ETag
and Last-Modified, and answers 304 Not Modified to a matching If-None-Match (or, when
that header is absent, If-Modified-Since).

Two contenders poll every feed twice, cold (all new) and warm (every feed answers 304):

* the baseline: ``for url in urls: feedparser.parse(url, etag=..., modified=...)``,
  sequential, keeping each answer's ETag and Last-Modified for the warm pass (in a JSON
  file between the two runs). It only fetches and parses: no storage, no
  classification. It runs as a program of its own (``poll_bench.py _loop STATE``), and
  its time is the whole process, as the CLI's is and as bench/farm_bench.py times every
  contender: a user runs either as a command. The loop's own time, without start-up and
  imports, is printed too (``of which the loop alone``).
* the CLI: ``python -m monitor poll --config feeds.yaml`` as a subprocess with its own
  SQLite database (fresh for the cold run, reused for the warm run) and Slack unset,
  so alerts go to the console (its stdout, kept in a file). Its time is the whole
  command: interpreter start-up, imports, schema creation, fetching, parsing in the
  process pool, classification, storage and the alert outbox.

The runs are interleaved (baseline cold, CLI cold, baseline warm, CLI warm) so a slow
patch of a shared machine hurts both contenders alike. The bench checks that the loop
parsed every entry and saw 304 everywhere when warm, that the CLI exited 0, and that
its database holds every item after the cold run.

Why ratios
----------
The machines this runs on are shared and noisy, so absolute seconds do not compare
between runs or machines. The figures that matter are ratios against the baseline
timed in the same script: ``loop seconds / reelwatch seconds`` (higher is better for
reelwatch). Targets: cold >= 2.00x (the CLI must use its concurrency and process pool
to beat a sequential loop by at least 2x), warm >= 0.50x (a run with nothing new may
cost at most twice the loop's, each a whole process).

Also printed, to explain the ratios: CPU time (the loop's is its process's; the CLI's
is its whole process tree, sampled from /proc, so parse workers count), the connections
and requests the server saw per run (keep-alive at work or not), and the CLI's memory:
peak RSS from GNU ``/usr/bin/time -f %M`` (the largest single process of its tree) when
present, else ``getrusage(RUSAGE_CHILDREN)`` (the max over every child waited for so
far), and the peak of the PSS summed over its tree (main process, forkserver, parse
workers), sampled from /proc.

The exit status is 0 whether or not the targets are met (this is a measurement, not a
test); it is 1 only when the measurement itself is invalid (the CLI failed, items are
missing, the server did not answer as expected).

    .venv/bin/python bench/poll_bench.py [--feeds N] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from xml.sax.saxutils import escape, quoteattr

import feedparser

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

TARGET_COLD = 2.0
TARGET_WARM = 0.5

MIN_ITEMS, MAX_ITEMS = 20, 40
MIN_BYTES, MAX_BYTES = 50_000, 80_000
# An item this large (full-text content) is shipped with its description only,
# as many outlets do, so that 20 items still fit in a realistic document.
ITEM_CONTENT_MAX = 5_000


# -- feed documents ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceEntry:
    source: str  # fixture file stem
    language: str | None
    channel_title: str
    channel_link: str
    title: str
    link: str
    guid: str
    summary: str  # HTML
    content: str  # HTML, may be empty
    published: str  # RFC 822, may be empty
    author: str
    categories: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FeedDoc:
    name: str
    body: bytes
    items: int
    etag: str
    last_modified: str


def load_entries(fixtures: Path) -> list[SourceEntry]:
    """Every entry of every fixture, read once with feedparser (outside any timing)."""
    entries: list[SourceEntry] = []
    for path in sorted(fixtures.glob("*.xml")):
        doc = feedparser.parse(path.read_bytes())
        info = doc.get("feed", {})
        for entry in doc.entries:
            link = (entry.get("link") or "").strip()
            if not link.startswith(("http://", "https://")):
                continue
            parsed = entry.get("published_parsed") or entry.get("updated_parsed")
            published = ""
            if parsed:
                published = format_datetime(
                    datetime(*parsed[:6], tzinfo=UTC), usegmt=True
                )  # feedparser's struct_time is UTC
            content = entry["content"][0].get("value", "") if entry.get("content") else ""
            entries.append(
                SourceEntry(
                    source=path.stem,
                    language=info.get("language"),
                    channel_title=info.get("title") or path.stem,
                    channel_link=info.get("link") or link,
                    title=entry.get("title") or "(untitled)",
                    link=link,
                    guid=(entry.get("id") or link).strip(),
                    summary=entry.get("summary") or "",
                    content=content if content != entry.get("summary") else "",
                    published=published,
                    author=entry.get("author") or "",
                    categories=tuple(t.get("term") for t in entry.get("tags", []) if t.get("term")),
                )
            )
    if not entries:
        raise SystemExit(f"no feed entries found in {fixtures}/*.xml")
    return entries


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _with_query(link: str, token: str) -> str:
    base, _, fragment = link.partition("#")
    joiner = "&" if "?" in base else "?"
    return f"{base}{joiner}rw={token}" + (f"#{fragment}" if fragment else "")


def render_item(entry: SourceEntry, feed: str, n: int) -> str:
    token = f"{feed}-{n:02d}"
    parts = [
        "<item>",
        f"<title>{escape(f'{entry.title} [{feed}/{n}]')}</title>",
        f"<link>{escape(_with_query(entry.link, token))}</link>",
        f'<guid isPermaLink="false">{escape(f"{entry.guid}#{token}")}</guid>',
    ]
    if entry.published:
        parts.append(f"<pubDate>{entry.published}</pubDate>")
    if entry.author:
        parts.append(f"<dc:creator>{_cdata(entry.author)}</dc:creator>")
    parts += [f"<category>{_cdata(c)}</category>" for c in entry.categories[:15]]
    parts.append(f"<description>{_cdata(entry.summary)}</description>")
    with_content = [*parts, f"<content:encoded>{_cdata(entry.content)}</content:encoded>"]
    if entry.content and len("".join(with_content)) <= ITEM_CONTENT_MAX:
        parts = with_content
    parts.append("</item>")
    return "\n".join(parts)


def build_feed(index: int, entries: list[SourceEntry], served_at: datetime) -> FeedDoc:
    """Feed `index`: the pool in a per-feed random order, until 50-80 KB and 20-40 items."""
    name = f"f{index:04d}"
    rng = random.Random(index)
    target = rng.randint(MIN_BYTES + 5_000, MAX_BYTES - 10_000)
    order = rng.sample(entries, len(entries))  # each source entry at most once per feed
    first = order[0]
    items: list[str] = []
    size = 0
    for entry in order:
        if len(items) >= MAX_ITEMS or (len(items) >= MIN_ITEMS and size >= target):
            break
        rendered = render_item(entry, name, len(items) + 1)
        if size + len(rendered.encode()) > MAX_BYTES - 2_000 and len(items) >= MIN_ITEMS:
            continue
        items.append(rendered)
        size += len(rendered.encode())
    last_modified = served_at - timedelta(minutes=index)
    language = f"<language>{escape(first.language)}</language>\n" if first.language else ""
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:atom="http://www.w3.org/2005/Atom">\n<channel>\n'
        f"<title>{escape(f'{first.channel_title} ({name})')}</title>\n"
        f"<link>{escape(_with_query(first.channel_link, name))}</link>\n"
        f'<atom:link href={quoteattr(f"http://127.0.0.1/{name}.xml")} rel="self"'
        ' type="application/rss+xml"/>\n'
        f"<description>{escape(f'Generated from {first.source} for the reelwatch bench')}"
        "</description>\n"
        f"{language}"
        f"<lastBuildDate>{format_datetime(last_modified, usegmt=True)}</lastBuildDate>\n"
        "<generator>reelwatch bench/poll_bench.py</generator>\n"
    )
    body = (head + "\n".join(items) + "\n</channel>\n</rss>\n").encode()
    return FeedDoc(
        name=name,
        body=body,
        items=len(items),
        etag='"' + hashlib.sha1(body).hexdigest()[:20] + '"',
        last_modified=format_datetime(last_modified, usegmt=True),
    )


# -- the feed server (a separate process) -----------------------------------------------------


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return "*" in candidates or etag in candidates


def _not_modified_since(header: str, last_modified: str) -> bool:
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return parsedate_to_datetime(last_modified) <= since


STATS_PATH = "/_bench/stats"


class _FeedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    docs: ClassVar[dict[str, FeedDoc]] = {}
    # connections accepted and requests answered, for STATS_PATH: shows keep-alive at work
    counts: ClassVar[dict[str, int]] = {"connections": 0, "requests": 0}
    lock: ClassVar[threading.Lock] = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.lock:
            self.counts["connections"] += 1

    def _plain(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == STATS_PATH:
            with self.lock:
                self._plain(200, f"{self.counts['connections']} {self.counts['requests']}")
            return
        with self.lock:
            self.counts["requests"] += 1
        doc = self.docs.get(self.path.split("?", 1)[0])
        if doc is None:
            self._plain(404, "not found\n")
            return
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        if inm is not None:
            fresh = _etag_matches(inm, doc.etag)
        else:
            fresh = ims is not None and _not_modified_since(ims, doc.last_modified)
        self.send_response(304 if fresh else 200)
        self.send_header("ETag", doc.etag)
        self.send_header("Last-Modified", doc.last_modified)
        if fresh:
            self.end_headers()
            return
        self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
        self.send_header("Content-Length", str(len(doc.body)))
        self.end_headers()
        self.wfile.write(doc.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


HOSTS = 50  # feeds are spread over this many loopback addresses: 127.0.0.1 .. 127.0.0.50


def host(index: int) -> str:
    """The loopback address serving feed `index`: a monitor polls many sites, not one."""
    return f"127.0.0.{index % HOSTS + 1}"


def serve(docs: list[FeedDoc], conn: Connection) -> None:
    """Runs in the server process: bind an ephemeral port on every host, report it, serve."""
    handler = type("Handler", (_FeedHandler,), {"docs": {f"/{d.name}.xml": d for d in docs}})
    first = _Server(("127.0.0.1", 0), handler)
    port = first.server_address[1]
    servers = [first] + [_Server((f"127.0.0.{k}", port), handler) for k in range(2, HOSTS + 1)]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, args=(0.5,), daemon=True).start()
    conn.send(port)
    conn.close()
    first.serve_forever(poll_interval=0.5)


def server_counts(port: int) -> tuple[int, int]:
    """(connections, requests) the feed server has seen; this call is one more connection."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}{STATS_PATH}", timeout=10) as response:
        connections, requests = response.read().split()
    return int(connections), int(requests)


def counted(port: int, traffic: dict[str, tuple[int, int]], label: str, run: Callable[[], T]) -> T:
    """run(), recording in traffic[label] the connections and requests it cost the server."""
    conns, reqs = server_counts(port)
    result = run()
    conns_after, reqs_after = server_counts(port)
    traffic[label] = (conns_after - conns - 1, reqs_after - reqs)
    return result


# -- contender B: the feedparser loop ---------------------------------------------------------


@dataclass(slots=True)
class LoopRun:
    seconds: float
    cpu_seconds: float  # the loop's process only: the server runs in its own
    statuses: dict[int, int]
    entries: int
    loop_seconds: float  # the loop alone, without the process's start-up and imports


def feedparser_loop(urls: list[str], etags: dict[str, str], mods: dict[str, str]) -> LoopRun:
    # No proxy: urllib would otherwise honour http_proxy for 127.0.0.1 (httpx is told not to).
    handlers = [urllib.request.ProxyHandler({})]
    statuses: dict[int, int] = {}
    entries = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for url in urls:
        d = feedparser.parse(url, etag=etags.get(url), modified=mods.get(url), handlers=handlers)
        if d.get("etag"):
            etags[url] = d["etag"]
        if d.get("modified"):
            mods[url] = d["modified"]
        status = d.get("status", 0)
        statuses[status] = statuses.get(status, 0) + 1
        entries += len(d.entries)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return LoopRun(seconds, cpu, statuses, entries, seconds)


def loop_main(state_path: str) -> int:
    """`poll_bench.py _loop STATE`: the loop as a program of its own, as a user would run it.

    STATE (JSON) holds the URLs and the ETag/Last-Modified answers of the previous run;
    the loop's answers and counts are written back to it.
    """
    path = Path(state_path)
    state = json.loads(path.read_text())
    run = feedparser_loop(state["urls"], state["etags"], state["mods"])
    state["statuses"] = {str(k): v for k, v in run.statuses.items()}
    state["entries"] = run.entries
    state["loop_seconds"] = run.seconds
    path.write_text(json.dumps(state))
    return 0


def child_env() -> dict[str, str]:
    """The environment of both contenders' processes: no reelwatch settings of the
    caller's, and cached bytecode, as a deployed program runs (pip install writes it;
    without it every run would compile the modules afresh, timing the compiler)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELWATCH_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_loop_process(workdir: Path, urls: list[str]) -> LoopRun:
    """Times the loop as a whole process (interpreter start-up and imports included),
    the way the CLI is timed."""
    state_path = workdir / "loop-state.json"
    if not state_path.exists():
        state_path.write_text(json.dumps({"urls": urls, "etags": {}, "mods": {}}))
    env = child_env()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "_loop", str(state_path)], env=env
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"the feedparser loop exited {proc.returncode}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    state = json.loads(state_path.read_text())
    statuses = {int(k): v for k, v in state["statuses"].items()}
    return LoopRun(seconds, cpu, statuses, state["entries"], state["loop_seconds"])


# -- contender A: the CLI ---------------------------------------------------------------------


@dataclass(slots=True)
class CliRun:
    seconds: float
    returncode: int
    summary: str
    alerts: int
    cpu_seconds: float | None  # user + sys of the whole process tree (see TreeSampler)
    peak_rss_kb: int | None  # the largest process of the tree
    tree_rss_kb: int | None  # the sum of PSS over the tree, sampled
    stderr_path: Path


def write_config(workdir: Path, port: int, docs: list[FeedDoc]) -> Path:
    lines = ["defaults:", "  interval: 15m", "feeds:"]
    for i, d in enumerate(docs):
        lines += [f"  - name: {d.name}", f"    url: http://{host(i)}:{port}/{d.name}.xml"]
    lines += ["topics:", "  ai: {label: AI, query: [AI, artificial intelligence, Sora]}", ""]
    path = workdir / "feeds.yaml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@dataclass(frozen=True, slots=True)
class ProcInfo:
    ppid: int
    cpu_seconds: float  # its own user + system time so far


def _process_table() -> dict[int, ProcInfo]:
    """Every process we can read in /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    table: dict[int, ProcInfo] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
            # the fields after "(comm)": state ppid ... utime (12th) stime (13th)
            fields = stat[stat.rfind(b")") + 2 :].split()
            cpu = (int(fields[11]) + int(fields[12])) / ticks
            table[int(entry)] = ProcInfo(int(fields[1]), cpu)
        except (OSError, ValueError, IndexError):
            continue
    return table


def memory_kb(pid: int) -> int:
    """Proportional set size (shared pages split between their users), else resident size."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return 0


def process_tree(root: int) -> dict[int, ProcInfo]:
    """`root` and its descendants."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, info in table.items():
        children.setdefault(info.ppid, []).append(pid)
    tree: dict[int, ProcInfo] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            tree[pid] = table[pid]
        todo += children.get(pid, [])
    return tree


class TreeSampler(threading.Thread):
    """Samples a process tree from /proc: the peak of its summed PSS, and its CPU time as
    the sum of each process's last-seen user + system time (a process that lives less
    than one interval, or its last interval, is under-counted)."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self.cpu_by_pid: dict[int, float] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(OSError):
                tree = process_tree(self.pid)
                self.peak_kb = max(self.peak_kb, sum(memory_kb(pid) for pid in tree))
                for pid, info in tree.items():
                    self.cpu_by_pid[pid] = max(self.cpu_by_pid.get(pid, 0.0), info.cpu_seconds)
            self._stop_event.wait(self.interval)

    def stop(self) -> tuple[int | None, float | None]:
        self._stop_event.set()
        self.join()
        return self.peak_kb or None, sum(self.cpu_by_pid.values()) or None


def run_cli(workdir: Path, config: Path, label: str) -> CliRun:
    env = child_env()
    env["REELWATCH_DATABASE_URL"] = f"sqlite:///{workdir / 'bench.db'}"
    env["REELWATCH_ALLOW_PRIVATE_NETWORKS"] = "1"  # the feeds are served on loopback
    stdout_path = workdir / f"{label}.stdout"
    stderr_path = workdir / f"{label}.stderr"
    rss_path = workdir / f"{label}.rss"
    command = [sys.executable, "-m", "monitor", "poll", "--config", str(config)]
    gnu_time = shutil.which("time", path="/usr/bin")
    if gnu_time:
        command = [gnu_time, "-f", "%M %U %S", "-o", str(rss_path), *command]
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=err)
        sampler = TreeSampler(proc.pid) if os.path.isdir("/proc") else None
        if sampler:
            sampler.start()
        returncode = proc.wait()
        seconds = time.perf_counter() - started
    tree_kb, cpu = sampler.stop() if sampler else (None, None)
    peak_kb: int | None = None
    if gnu_time:
        try:
            rss, user, system = rss_path.read_text().split()[-3:]
            peak_kb = int(rss)
            # GNU time sees the main process and the children it waited for; the sampler
            # sees every process but misses each one's last interval: both under-count
            cpu = max(cpu or 0.0, float(user) + float(system))
        except (OSError, ValueError):
            peak_kb = None
    if peak_kb is None:  # the max over every child waited for so far, in KB on Linux
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    text = stdout_path.read_text(encoding="utf-8", errors="replace")
    summary = next((ln for ln in text.splitlines() if ln.startswith("feeds:")), "")
    alerts = sum(1 for ln in text.splitlines() if ln.startswith("ALERT "))
    return CliRun(seconds, returncode, summary, alerts, cpu, peak_kb, tree_kb, stderr_path)


def db_count(workdir: Path, table: str) -> int:
    with sqlite3.connect(workdir / "bench.db") as conn:
        return conn.execute(f"select count(*) from {table}").fetchone()[0]


# -- the report -------------------------------------------------------------------------------


def _mb(kb: int | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024:.0f} MB"


def _secs(value: float | None) -> str:
    if value is None:
        return "failed"
    return f"{value:.1f} s" if value >= 10 else f"{value:.2f} s"


def _cpu(value: float | None) -> str:
    return "n/a" if value is None else _secs(value)


def _ratio(loop: float, cli: float | None) -> float | None:
    return None if cli is None or cli <= 0 else loop / cli


def _check(problems: list[str], ok: bool, message: str) -> None:
    if not ok:
        problems.append(message)
        print(f"  !! {message}", flush=True)


def _show_stderr(run: CliRun, lines: int = 40) -> None:
    tail = run.stderr_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    print(f"  --- last {len(tail)} lines of the CLI's stderr ({run.stderr_path}) ---")
    for line in tail:
        print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--feeds", type=int, default=500, metavar="N", help="feeds (default 500)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (DB, logs, config)")
    args = parser.parse_args(argv)
    if args.feeds < 1:
        parser.error("--feeds must be at least 1")

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    entries = load_entries(FIXTURES)
    served_at = datetime.now(UTC).replace(microsecond=0)
    docs = [build_feed(i, entries, served_at) for i in range(1, args.feeds + 1)]
    total_items = sum(d.items for d in docs)
    sizes = sorted(len(d.body) for d in docs)
    counts = sorted(d.items for d in docs)

    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    server = ctx.Process(target=serve, args=(docs, send), name="bench-feed-server", daemon=True)
    server.start()
    send.close()
    workdir = Path(tempfile.mkdtemp(prefix="reelwatch-bench-"))
    problems: list[str] = []
    try:
        if not receive.poll(60):
            raise SystemExit("the feed server process did not start")
        port = receive.recv()
        urls = [f"http://{host(i)}:{port}/{d.name}.xml" for i, d in enumerate(docs)]
        config = write_config(workdir, port, docs)

        print(
            f"reelwatch poll benchmark: {len(docs)} feeds, {total_items} items, {cpus} CPUs",
            flush=True,
        )
        print(
            f"  documents: {len(entries)} fixture entries -> {counts[0]}-{counts[-1]} items, "
            f"{sizes[0] / 1000:.0f}-{sizes[-1] / 1000:.0f} KB "
            f"(median {statistics.median(sizes) / 1000:.0f} KB) per feed; "
            f"served from pid {server.pid} on 127.0.0.1:{port}",
            flush=True,
        )
        traffic: dict[str, tuple[int, int]] = {}

        print("  1/4 feedparser loop, cold ...", flush=True)
        loop_cold = counted(port, traffic, "loop cold", lambda: run_loop_process(workdir, urls))
        _check(
            problems,
            loop_cold.statuses == {200: len(urls)},
            f"feedparser loop cold: statuses {loop_cold.statuses}",
        )
        _check(
            problems,
            loop_cold.entries == total_items,
            f"feedparser loop cold parsed {loop_cold.entries} entries, expected {total_items}",
        )

        print("  2/4 reelwatch poll, cold ...", flush=True)
        cli_cold = counted(
            port, traffic, "reelwatch cold", lambda: run_cli(workdir, config, "cold")
        )
        stored = db_count(workdir, "items") if (workdir / "bench.db").exists() else 0
        _check(
            problems, cli_cold.returncode == 0, f"reelwatch poll cold exited {cli_cold.returncode}"
        )
        _check(
            problems,
            stored == total_items,
            f"reelwatch poll cold stored {stored} items, expected {total_items}",
        )
        if cli_cold.returncode != 0 or stored != total_items:
            _show_stderr(cli_cold)

        print("  3/4 feedparser loop, warm ...", flush=True)
        loop_warm = counted(port, traffic, "loop warm", lambda: run_loop_process(workdir, urls))
        _check(
            problems,
            loop_warm.statuses == {304: len(urls)},
            f"feedparser loop warm: statuses {loop_warm.statuses}, expected all 304",
        )

        print("  4/4 reelwatch poll, warm ...", flush=True)
        cli_warm = counted(
            port, traffic, "reelwatch warm", lambda: run_cli(workdir, config, "warm")
        )
        _check(
            problems, cli_warm.returncode == 0, f"reelwatch poll warm exited {cli_warm.returncode}"
        )
        _check(
            problems,
            f"{len(urls)} unchanged" in cli_warm.summary,
            f"reelwatch poll warm: not every feed unchanged: {cli_warm.summary!r}",
        )
        if cli_warm.returncode != 0:
            _show_stderr(cli_warm)
        stored_after = db_count(workdir, "items") if (workdir / "bench.db").exists() else 0
        matches = db_count(workdir, "matches") if stored_after else 0
    finally:
        server.terminate()
        server.join(10)
        receive.close()
        if args.keep:
            print(f"  kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    cold_cli = cli_cold.seconds if cli_cold.returncode == 0 else None
    warm_cli = cli_warm.seconds if cli_warm.returncode == 0 else None
    ratio_cold = _ratio(loop_cold.seconds, cold_cli)
    ratio_warm = _ratio(loop_warm.seconds, warm_cli)

    def fmt_ratio(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}x"

    def row(a: str, b: str, c: str) -> str:
        return f"{a:<26}{b:>14}{c:>19}"

    print()
    print(f"reelwatch poll benchmark: {len(docs)} feeds, {total_items} items, {cpus} CPUs")
    print(row("", "cold (all new)", "warm (all 304)"))
    print(row("feedparser loop", _secs(loop_cold.seconds), _secs(loop_warm.seconds)))
    print(row("reelwatch poll", _secs(cold_cli), _secs(warm_cli)))
    print(row("ratio (loop / reelwatch)", fmt_ratio(ratio_cold), fmt_ratio(ratio_warm)))
    print(row("targets", f">= {TARGET_COLD:.2f}x", f">= {TARGET_WARM:.2f}x"))
    print(
        row(
            "  of which the loop alone",
            _secs(loop_cold.loop_seconds),
            _secs(loop_warm.loop_seconds),
        )
    )
    print(
        row("CPU time, feedparser loop", _cpu(loop_cold.cpu_seconds), _cpu(loop_warm.cpu_seconds))
    )
    print(row("CPU time, reelwatch poll", _cpu(cli_cold.cpu_seconds), _cpu(cli_warm.cpu_seconds)))
    print(
        f"peak RSS reelwatch poll: {_mb(max(cli_cold.peak_rss_kb or 0, cli_warm.peak_rss_kb or 0))}"
        f" (largest process; cold {_mb(cli_cold.peak_rss_kb)}, warm {_mb(cli_warm.peak_rss_kb)});"
        f" whole process tree (PSS, sampled): cold {_mb(cli_cold.tree_rss_kb)},"
        f" warm {_mb(cli_warm.tree_rss_kb)}"
    )
    print(
        f"items in the CLI's database after cold: {stored} (expected {total_items});"
        f" matches: {matches}; console alerts: {cli_cold.alerts}"
    )
    print(
        "HTTP connections / requests seen by the server: "
        + ", ".join(f"{label} {c}/{r}" for label, (c, r) in traffic.items())
    )
    print(f"CLI cold: {cli_cold.summary or '(no summary line)'}")
    print(f"CLI warm: {cli_warm.summary or '(no summary line)'}")
    for label, ratio, target in (
        ("cold", ratio_cold, TARGET_COLD),
        ("warm", ratio_warm, TARGET_WARM),
    ):
        verdict = "PASS" if ratio is not None and ratio >= target else "FAIL"
        print(f"{verdict} {label}: ratio {fmt_ratio(ratio)} (target >= {target:.2f}x)")
    if problems:
        print(f"INVALID measurement ({len(problems)} problem(s)):")
        for p in problems:
            print(f"  - {p}")
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_loop"]:
        sys.exit(loop_main(sys.argv[2]))
    sys.exit(main())
