"""Benchmark: whole `reelwatch poll` processes over a farm of feeds served by nginx,
against a sequential feedparser loop and the `reader` library, in the same run.

The farm
--------
N feeds (``--feeds``, default 2,000) are written to ``bench/farm/n<N>/www/``: RSS 2.0
(70 %) and Atom (30 %) documents of 20-50 items and 30-150 KB each, with HTML
descriptions, in five languages (en, it, de, es, fr). Item text is drawn from the
labelled set (tests/data/labelled/*.jsonl: about 3 % of items are AI-in-entertainment
stories, 12 % the set's look-alike traps such as "Ai Weiwei" or "AI" in a chip story)
and, for the rest, from the real outlet feeds in tests/fixtures/ and
/work/shared/fixtures/feeds/real/ (entries and paragraphs that mention no AI term, so
the share of relevant items stays what the labelled set puts in). Every item has its
own guid, link and title suffix, so a cold poll finds everything new. The text pools
hold about 1,150 distinct stories, so each appears in many feeds, as a wire story
does: reelwatch groups such copies into stories, and that work grows with the copies.

nginx (Debian's ``nginx-light``; ``make nginx`` installs it) serves the directory from
50 loopback addresses, 127.0.0.1 to 127.0.0.50 on one free port (a monitor polls many
sites, and reelwatch limits itself per host), as a child process in the foreground
with a generated config, pid and logs in the farm dir. Being a static file server it
answers If-None-Match / If-Modified-Since with 304 from the file's ETag (mtime and
size) and Last-Modified (mtime), as most real feed hosts do.

What is timed
-------------
Three polls of every contender, each a whole process (interpreter start-up, imports,
storage included), interleaved per phase so a slow patch of a shared machine hurts
all alike:

* cold: an empty state (fresh database), every feed 200 and every item new;
* warm: the same state again, every feed 304 (a few seconds, so each contender runs
  WARM_REPEATS = 3 times, interleaved, and its median run counts);
* changed: 10 % of the files rewritten with 1-5 new items each (the oldest drop off)
  and a new mtime; the others 304.

Contenders:

* ``reelwatch``: ``python -m monitor poll --config feeds.yaml`` with the shipped
  topics and watchlists, REELWATCH_ALLOW_PRIVATE_NETWORKS=1 (the farm is on loopback),
  REELWATCH_DATABASE_URL at a fresh SQLite file in the farm dir and Slack unset, so
  alerts go to the console (its stdout, kept in the farm dir's logs/).
* ``loop``: sequential ``feedparser.parse(url, etag=..., modified=...)`` over every
  feed, passing back each feed's ETag and Last-Modified and storing the feed state and
  every entry (INSERT OR IGNORE) in a two-table SQLite file, committing per feed.
* ``reader``: the reader library (``pip install -e '.[bench]'``): ``make_reader(db)``;
  the feeds are added before the cold poll, untimed; each poll is
  ``update_feeds(workers=8, scheduled=False)``.

For each process: wall time; CPU (user + sys) of its whole process tree, from
``getrusage(RUSAGE_CHILDREN)`` in a small wrapper that makes itself a child subreaper
(PR_SET_CHILD_SUBREAPER), so reelwatch's forkserver parse workers, orphaned when their
parent exits, are re-parented to it and reaped, and their time counts; peak memory of
the largest process (the wrapper's RUSAGE_CHILDREN ru_maxrss, and every process's
VmHWM seen by the sampler) and of all processes together (the sum of VmRSS over the
tree, sampled from /proc every 100 ms by a thread); feeds/s and new items/s.

Targets (ratios against the baselines timed in the same run, since shared machines
are noisy; they are reported, not tuned for):

* cold: reelwatch >= 2.2x faster than the loop and >= 2.5x faster than reader;
* warm: reelwatch within 1.5x of the loop's time and >= 2x faster than reader;
* changed: reelwatch <= 0.6x the loop's time;
* the largest reelwatch process <= 100 MiB (at N, and at 10,000 with ``--scale``);
* with ``--scale``: reelwatch's time per feed at 10,000 feeds within 10 % of its time
  per feed at N (the baselines are not run at 10,000: it would take an hour).

The table is printed and written to bench/RESULTS.md with the machine. The exit
status is 0 whether or not targets pass; 1 when the measurement is invalid (a
contender failed, missed items, or the server did not answer 200/304 as expected).

    .venv/bin/python bench/farm_bench.py [--feeds N] [--scale] [--no-results]
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import platform
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

ROOT = Path(__file__).resolve().parent.parent
FARM = ROOT / "bench" / "farm"
LABELLED = ROOT / "tests" / "data" / "labelled"
FIXTURE_DIRS = [ROOT / "tests" / "fixtures", Path("/work/shared/fixtures/feeds/real")]
RESULTS = ROOT / "bench" / "RESULTS.md"

TARGET_COLD_LOOP = 2.2  # loop seconds / reelwatch seconds, at least
TARGET_COLD_READER = 2.5  # reader seconds / reelwatch seconds, at least
TARGET_WARM_LOOP = 1.5  # reelwatch seconds / loop seconds, at most
TARGET_WARM_READER = 2.0  # reader seconds / reelwatch seconds, at least
TARGET_CHANGED_LOOP = 0.6  # reelwatch seconds / loop seconds, at most
TARGET_LARGEST_MIB = 100
TARGET_PER_FEED_DRIFT = 0.10
SCALE_FEEDS = 10_000

MIN_ITEMS, MAX_ITEMS = 20, 50
MIN_BYTES, MAX_BYTES = 30_000, 150_000
RELEVANT_SHARE, TRAP_SHARE = 0.03, 0.12
CHANGED_SHARE = 0.10
# A warm poll is a few seconds, so a shared machine's slow moment weighs much in it: its
# contenders run this many times, interleaved, and the median run counts.
WARM_REPEATS = 3
LANGUAGES = {"en": 0.50, "it": 0.15, "de": 0.12, "es": 0.12, "fr": 0.11}
HOSTS = 50
READER_WORKERS = 8
CONTENDERS = ("loop", "reelwatch", "reader")
PHASES = ("cold", "warm", "changed")

# Text that mentions AI in any of the five languages: kept out of the filler, so that
# only the labelled items decide how many items are about AI.
_AI_TERMS = re.compile(
    r"\b(AI|A\.I\.|KI|IA|I\.A\.|IAs|GenAI|LLMs?|GPT)\b"
    r"|(?i:artificial|intelligen[tz]|künstlich|deepfake|machine.learning|generativ"
    r"|chatgpt|openai|sora\b|runway|midjourney|algorithm|algoritm|robot|neural|chatbot)"
)
# Which language a fixture's text is in, by its file name; anything else is English.
_FIXTURE_LANG = (("_it_", "it"), ("_de_", "de"), ("_fr_", "fr"), ("_es_", "es"))
_SKIP_FIXTURES = ("_pt_", "_cn_", "_br_", "jsonfeed")


# -- the text the farm is made of -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Story:
    title: str
    summary: str  # plain text
    link: str
    author: str
    categories: tuple[str, ...]


@dataclass(slots=True)
class Pool:
    relevant: list[Story] = field(default_factory=list)
    traps: list[Story] = field(default_factory=list)
    filler: list[Story] = field(default_factory=list)
    paragraphs: list[str] = field(default_factory=list)


def _plain(markup: str) -> str:
    text = re.sub(r"<[^>]+>", " ", markup)
    return re.sub(r"\s+", " ", html.unescape(text)).strip()


def _paragraphs(markup: str) -> list[str]:
    """Chunks of 200-700 characters of an entry's text, cut at sentence ends."""
    out: list[str] = []
    for block in re.split(r"(?i)</p>|<br\s*/?>|\n\s*\n", markup):
        text = _plain(block)
        while len(text) > 700:
            cut = text.rfind(". ", 200, 700)
            cut = cut + 1 if cut > 0 else 700
            out.append(text[:cut].strip())
            text = text[cut:].strip()
        if len(text) >= 120:
            out.append(text)
    return out


def load_pools() -> dict[str, Pool]:
    """Stories and paragraphs per language, read once (before any timing)."""
    import feedparser

    pools = {lang: Pool() for lang in LANGUAGES}
    for path in sorted(LABELLED.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            pool = pools.get(rec["lang"])
            if pool is None:
                continue
            story = Story(
                rec["title"],
                rec.get("summary") or "",
                f"https://news.example.org/{rec['lang']}/{rec['id']}",
                "Redazione" if rec["lang"] == "it" else "Staff",
                tuple(rec.get("topics") or ()),
            )
            (pool.relevant if rec["relevant"] else pool.traps).append(story)
    seen: set[str] = set()
    for directory in FIXTURE_DIRS:
        for path in sorted(directory.glob("*.xml")):
            if path.name in seen or any(s in path.name for s in _SKIP_FIXTURES):
                continue
            seen.add(path.name)
            lang = next((code for key, code in _FIXTURE_LANG if key in path.name), "en")
            doc = feedparser.parse(path.read_bytes())
            for entry in doc.entries[:120]:
                title = _plain(entry.get("title") or "")
                body = entry["content"][0].get("value", "") if entry.get("content") else ""
                summary = entry.get("summary") or ""
                link = (entry.get("link") or "").strip()
                if not title or not link.startswith(("http://", "https://")):
                    continue
                pool = pools[lang]
                pool.paragraphs += [
                    p for p in _paragraphs(body or summary) if not _AI_TERMS.search(p)
                ]
                text = _plain(summary)[:600]
                if _AI_TERMS.search(title) or _AI_TERMS.search(text):
                    continue
                tags = tuple(t.get("term") for t in entry.get("tags", []) if t.get("term"))[:6]
                pool.filler.append(Story(title, text, link, entry.get("author") or "", tags))
    for lang, pool in pools.items():
        # a language with little real text borrows its traps' summaries as filler too
        pool.paragraphs += [s.summary for s in pool.traps if not _AI_TERMS.search(s.summary)]
        if not pool.filler:
            pool.filler = list(pool.traps)
        if not (pool.relevant and pool.traps and pool.paragraphs):
            raise SystemExit(f"not enough text for language {lang!r}")
    return pools


# -- the feed documents -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedSpec:
    index: int
    name: str
    lang: str
    atom: bool
    items: int
    target_bytes: int

    @property
    def filename(self) -> str:
        return f"{self.name}.{'atom' if self.atom else 'rss'}"


def feed_specs(n: int) -> list[FeedSpec]:
    specs = []
    langs, weights = zip(*LANGUAGES.items(), strict=True)
    for i in range(1, n + 1):
        rng = random.Random(i * 7919)
        target = rng.randint(MIN_BYTES + 6_000, MAX_BYTES - 8_000)
        specs.append(
            FeedSpec(
                index=i,
                name=f"f{i:05d}",
                lang=rng.choices(langs, weights)[0],
                atom=rng.random() < 0.30,
                # at least ~1.3 KB an item: a summary and some markup
                items=rng.randint(MIN_ITEMS, max(MIN_ITEMS, min(MAX_ITEMS, target // 1_300))),
                target_bytes=target,
            )
        )
    return specs


def host(index: int) -> str:
    return f"127.0.0.{index % HOSTS + 1}"


@dataclass(frozen=True, slots=True)
class Item:
    guid: str
    title: str
    link: str
    author: str
    categories: tuple[str, ...]
    published: datetime
    body: str  # HTML
    kind: str  # relevant, trap, filler


def _body(rng: random.Random, pool: Pool, summary: str, budget: int) -> str:
    """HTML of about `budget` bytes: the summary, then paragraphs (links, bold, figures)."""
    parts = [f"<p>{escape(summary)}</p>\n"] if summary else []
    size = len(parts[0].encode()) if parts else 0
    while size < budget - 80:
        text = escape(rng.choice(pool.paragraphs))
        roll = rng.random()
        if roll < 0.25:
            words = text.split(" ")
            k = rng.randrange(len(words))
            words[k] = (
                f'<a href="https://www.example.org/tag/{rng.randrange(10**6)}">{words[k]}</a>'
            )
            text = " ".join(words)
        elif roll < 0.40:
            text = f"<strong>{text[:60]}</strong>{text[60:]}"
        para = f"<p>{text}</p>\n"
        if rng.random() < 0.08:
            para += (
                f'<figure><img src="https://cdn.example.org/img/{rng.randrange(10**8)}.jpg"'
                f' alt="" width="1200" height="675"/></figure>\n'
            )
        room = budget - size
        if len(para.encode()) > room:  # the last paragraph is cut to fit, at a word
            plain = _plain(para)
            cut = plain.rfind(" ", 0, max(room - 12, 0))
            if cut < 40:
                break
            para = f"<p>{escape(plain[:cut])}…</p>\n"
        parts.append(para)
        size += len(para.encode())
    return "".join(parts)


def make_item(spec: FeedSpec, serial: int, pool: Pool, base: datetime) -> Item:
    rng = random.Random(spec.index * 1_000_003 + serial)
    roll = rng.random()
    if roll < RELEVANT_SHARE:
        kind, story = "relevant", rng.choice(pool.relevant)
    elif roll < RELEVANT_SHARE + TRAP_SHARE:
        kind, story = "trap", rng.choice(pool.traps)
    else:
        kind, story = "filler", rng.choice(pool.filler)
    # what is left of the item's share of the document once its other elements are in
    overhead = 420 + len(story.title) + len(story.link) + sum(len(c) + 30 for c in story.categories)
    budget = int(spec.target_bytes / spec.items * rng.uniform(0.7, 1.3)) - overhead
    if spec.atom:  # its HTML is escaped: < and > cost 4 bytes
        budget = int(budget / 1.12)
    token = f"{spec.name}-{serial}"
    sep = "&" if "?" in story.link else "?"
    return Item(
        guid=f"urn:reelwatch-bench:{token}",
        title=f"{story.title} ({spec.name} #{serial})",
        link=f"{story.link.split('#', 1)[0]}{sep}rw={token}",
        author=story.author,
        categories=story.categories,
        # serials count up in time: the newest item has the highest serial
        published=base + timedelta(minutes=37 * (serial - spec.items) - spec.index),
        body=_body(rng, pool, story.summary, max(budget, 400)),
        kind=kind,
    )


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def render_rss(spec: FeedSpec, items: list[Item], url: str) -> bytes:
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:atom="http://www.w3.org/2005/Atom">\n<channel>\n'
        f"<title>Bench outlet {spec.name}</title>\n"
        f"<link>https://{spec.name}.example.org/</link>\n"
        f'<atom:link href={quoteattr(url)} rel="self" type="application/rss+xml"/>\n'
        f"<description>News from {spec.name} ({spec.lang})</description>\n"
        f"<language>{spec.lang}</language>\n"
        f"<lastBuildDate>{format_datetime(items[0].published, usegmt=True)}</lastBuildDate>\n"
        "<generator>reelwatch bench/farm_bench.py</generator>\n"
    ]
    for it in items:
        out.append(
            "<item>\n"
            f"<title>{escape(it.title)}</title>\n"
            f"<link>{escape(it.link)}</link>\n"
            f'<guid isPermaLink="false">{escape(it.guid)}</guid>\n'
            f"<pubDate>{format_datetime(it.published, usegmt=True)}</pubDate>\n"
            + (f"<dc:creator>{_cdata(it.author)}</dc:creator>\n" if it.author else "")
            + "".join(f"<category>{_cdata(c)}</category>\n" for c in it.categories)
            + f"<description>{_cdata(it.body)}</description>\n</item>\n"
        )
    out.append("</channel>\n</rss>\n")
    return "".join(out).encode()


def render_atom(spec: FeedSpec, items: list[Item], url: str) -> bytes:
    out = [
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="{spec.lang}">\n'
        f"<title>Bench outlet {spec.name}</title>\n"
        f"<id>urn:reelwatch-bench:{spec.name}</id>\n"
        f'<link rel="alternate" href="https://{spec.name}.example.org/"/>\n'
        f'<link rel="self" href={quoteattr(url)}/>\n'
        f"<updated>{items[0].published.isoformat()}</updated>\n"
        "<generator>reelwatch bench/farm_bench.py</generator>\n"
    ]
    for it in items:
        stamp = it.published.isoformat()
        out.append(
            "<entry>\n"
            f'<title type="html">{escape(escape(it.title))}</title>\n'
            f"<id>{escape(it.guid)}</id>\n"
            f'<link rel="alternate" type="text/html" href={quoteattr(it.link)}/>\n'
            f"<published>{stamp}</published>\n<updated>{stamp}</updated>\n"
            + (f"<author><name>{escape(it.author)}</name></author>\n" if it.author else "")
            + "".join(f"<category term={quoteattr(c)}/>\n" for c in it.categories)
            + f'<content type="html">{escape(it.body)}</content>\n</entry>\n'
        )
    out.append("</feed>\n")
    return "".join(out).encode()


@dataclass(slots=True)
class Farm:
    dir: Path
    specs: list[FeedSpec]
    pools: dict[str, Pool]
    base: datetime
    port: int = 0
    items: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    bytes: list[int] = field(default_factory=list)

    @property
    def www(self) -> Path:
        return self.dir / "www"

    def url(self, spec: FeedSpec) -> str:
        return f"http://{host(spec.index)}:{self.port}/{spec.filename}"

    def write(self, spec: FeedSpec, serials: list[int]) -> tuple[int, Counter[str]]:
        pool = self.pools[spec.lang]
        items = [make_item(spec, s, pool, self.base) for s in serials]
        # the self link names the conventional host; the port is not known yet
        self_url = f"http://{host(spec.index)}/{spec.filename}"
        body = (render_atom if spec.atom else render_rss)(spec, items, self_url)
        (self.www / spec.filename).write_bytes(body)
        return len(body), Counter(it.kind for it in items)

    def generate(self) -> None:
        if self.www.exists():
            shutil.rmtree(self.www)
        self.www.mkdir(parents=True)
        for spec in self.specs:
            size, kinds = self.write(spec, list(range(spec.items, 0, -1)))
            self.bytes.append(size)
            self.kinds += kinds
            self.items += spec.items

    def change(self, share: float) -> tuple[int, int]:
        """Rewrite `share` of the feeds with 1-5 new items each and a newer mtime."""
        rng = random.Random(20_250_101)
        chosen = rng.sample(self.specs, max(1, round(len(self.specs) * share)))
        new = 0
        for spec in chosen:
            k = rng.randint(1, 5)
            serials = list(range(spec.items + k, k, -1))
            self.write(spec, serials)
            path = self.www / spec.filename
            stamp = max(time.time(), path.stat().st_mtime) + 2  # a new ETag and Last-Modified
            os.utime(path, (stamp, stamp))
            new += k
        return len(chosen), new


# -- nginx ------------------------------------------------------------------------------------


def ensure_nginx() -> str:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not binary:
        raise SystemExit(
            "nginx is not installed: `make nginx` (or: apt-get update -qq && "
            "apt-get install -y nginx-light)"
        )
    return binary


def _free_port() -> int:
    """A port free on every farm address (a race with other programs is retried)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        try:
            for k in range(1, HOSTS + 1):
                with socket.socket() as s:
                    s.bind((f"127.0.0.{k}", port))
            return port
        except OSError:
            continue
    raise SystemExit("no port free on every loopback address")


class Nginx:
    def __init__(self, farm: Farm):
        self.farm = farm
        self.binary = ensure_nginx()
        self.proc: subprocess.Popen[bytes] | None = None
        self.access_log = farm.dir / "nginx-access.log"
        self._log_offset = 0

    def _config(self, port: int) -> str:
        d = self.farm.dir
        listens = "\n".join(f"    listen 127.0.0.{k}:{port};" for k in range(1, HOSTS + 1))
        user = "user root;\n" if os.geteuid() == 0 else ""
        return f"""# generated by bench/farm_bench.py
daemon off;
{user}worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  types {{ application/rss+xml rss; application/atom+xml atom; }}
  default_type application/octet-stream;
  log_format bench '$status $request_uri';
  access_log {self.access_log} bench;
  client_body_temp_path {d}/tmp;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  server {{
{listens}
    root {self.farm.www};
    location / {{ }}
  }}
}}
"""

    def start(self) -> int:
        (self.farm.dir / "tmp").mkdir(exist_ok=True)
        for _attempt in range(5):
            port = _free_port()
            conf = self.farm.dir / "nginx.conf"
            conf.write_text(self._config(port), encoding="utf-8")
            self.access_log.write_bytes(b"")
            err = open(self.farm.dir / "nginx-stderr.log", "wb")  # noqa: SIM115
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "-p",
                    str(self.farm.dir),
                    "-c",
                    str(conf),
                    "-e",
                    str(self.farm.dir / "nginx-error.log"),
                ],
                stdout=err,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
            err.close()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with socket.create_connection((f"127.0.0.{HOSTS}", port), timeout=0.5):
                        self.farm.port = port
                        return port
                except OSError:
                    time.sleep(0.05)
            self.stop()
        log = (self.farm.dir / "nginx-error.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"nginx did not start; its error log ends:\n{log}")

    def statuses(self) -> Counter[int]:
        """Statuses nginx logged since the previous call."""
        with open(self.access_log, "rb") as fh:
            fh.seek(self._log_offset)
            data = fh.read()
        cut = data.rfind(b"\n") + 1
        self._log_offset += cut
        return Counter(int(line.split(b" ", 1)[0]) for line in data[:cut].splitlines() if line)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# -- measuring a process tree -----------------------------------------------------------------

# Runs the contender as its child, as a child subreaper: orphans in the tree (the
# forkserver's parse workers when their parent exits) are re-parented to it and reaped
# here, so RUSAGE_CHILDREN holds the user + sys time and the largest ru_maxrss of the
# whole tree (and nothing of the wrapper itself).
_WRAPPER = """
import ctypes, json, os, resource, subprocess, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
report = sys.argv[1]
started = time.perf_counter()
code = subprocess.run(sys.argv[2:]).returncode
seconds = time.perf_counter() - started
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(report, "w") as fh:
    json.dump({"exit": code, "seconds": seconds, "user": ru.ru_utime, "sys": ru.ru_stime,
               "maxrss_kb": ru.ru_maxrss, "reaped_after": time.perf_counter() - started}, fh)
"""


def _ppid_table() -> dict[int, int]:
    table: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    stat = fh.read()
                table[int(entry)] = int(stat[stat.rfind(b")") + 2 :].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return table


def _status_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith(b"VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


class TreeSampler(threading.Thread):
    """Every 100 ms: the descendants of `root` (not root itself), their summed VmRSS and
    each one's VmHWM (its own peak so far)."""

    def __init__(self, root: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_all_kb = 0
        self.peak_one_kb = 0
        self.processes: set[int] = set()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(OSError):
                table = _ppid_table()
                children: dict[int, list[int]] = {}
                for pid, ppid in table.items():
                    children.setdefault(ppid, []).append(pid)
                todo, total = list(children.get(self.root, [])), 0
                while todo:
                    pid = todo.pop()
                    todo += children.get(pid, [])
                    try:
                        rss, hwm = _status_kb(pid)
                    except (OSError, ValueError, IndexError):
                        continue
                    self.processes.add(pid)
                    total += rss
                    self.peak_one_kb = max(self.peak_one_kb, hwm, rss)
                self.peak_all_kb = max(self.peak_all_kb, total)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


@dataclass(slots=True)
class Run:
    contender: str
    phase: str
    feeds: int
    seconds: float = 0.0
    cpu: float = 0.0
    largest_kb: int = 0
    all_kb: int = 0
    processes: int = 0
    exit: int = -1
    new_items: int | None = None  # what the contender says it stored
    statuses: Counter[int] = field(default_factory=Counter)  # what nginx answered
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.exit == 0


def measure(label: str, command: list[str], env: dict[str, str], logs: Path) -> Run:
    report = logs / f"{label}.json"
    report.unlink(missing_ok=True)
    with open(logs / f"{label}.stdout", "wb") as out, open(logs / f"{label}.stderr", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WRAPPER, str(report), *command],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        proc.wait()
        sampler.stop()
    contender, phase = label.split("-", 1)
    run = Run(contender, phase, 0)
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        run.note = f"the wrapper wrote no report (exit {proc.returncode})"
        return run
    run.exit = data["exit"]
    run.seconds = data["seconds"]
    run.cpu = data["user"] + data["sys"]
    run.largest_kb = max(data["maxrss_kb"], sampler.peak_one_kb)
    run.all_kb = max(sampler.peak_all_kb, run.largest_kb)
    run.processes = len(sampler.processes)
    return run


# -- the contenders ---------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    drop = ("REELWATCH_", "SLACK_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(drop) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    # A deployed service runs from cached bytecode (pip install writes it): without
    # the cache every process would compile its modules afresh, timing the compiler.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def write_reelwatch_config(farm: Farm) -> Path:
    """The farm's feeds with the shipped topics, watchlists and slack settings."""
    shipped = (ROOT / "feeds.yaml").read_text(encoding="utf-8")
    start = re.search(r"(?m)^topics:", shipped)
    if start is None:
        raise SystemExit("feeds.yaml has no topics: section")
    lines = ["defaults:", "  interval: 15m", "feeds:"]
    for spec in farm.specs:
        lines += [f"  - name: {spec.name}", f"    url: {farm.url(spec)}"]
    path = farm.dir / "feeds.yaml"
    path.write_text("\n".join(lines) + "\n" + shipped[start.start() :], encoding="utf-8")
    return path


class Contenders:
    def __init__(self, farm: Farm, nginx: Nginx):
        self.farm, self.nginx = farm, nginx
        self.logs = farm.dir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.urls = farm.dir / "urls.txt"
        self.urls.write_text("\n".join(farm.url(s) for s in farm.specs) + "\n")
        self.config = write_reelwatch_config(farm)
        self.db = {c: farm.dir / f"{c}.db" for c in CONTENDERS}
        for path in self.db.values():
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        self.env = clean_env()
        self.counts: dict[str, int] = {}

    def setup_reader(self) -> None:
        """Adds every feed to reader's database, untimed (reelwatch reads them from its
        config, the loop from its list, both inside the timed run)."""
        subprocess.run(
            [sys.executable, __file__, "_reader", "add", str(self.db["reader"]), str(self.urls)],
            check=True,
            env=self.env,
            cwd=ROOT,
        )

    def command(self, contender: str) -> tuple[list[str], dict[str, str]]:
        env = dict(self.env)
        if contender == "reelwatch":
            env["REELWATCH_ALLOW_PRIVATE_NETWORKS"] = "1"
            env["REELWATCH_DATABASE_URL"] = f"sqlite:///{self.db['reelwatch']}"
            return [sys.executable, "-m", "monitor", "poll", "--config", str(self.config)], env
        if contender == "loop":
            return [sys.executable, __file__, "_loop", str(self.db["loop"]), str(self.urls)], env
        return [
            sys.executable,
            __file__,
            "_reader",
            "update",
            str(self.db["reader"]),
            str(self.urls),
        ], env

    def stored(self, contender: str) -> int:
        table = {"reelwatch": "items", "loop": "entries", "reader": "entries"}[contender]
        with contextlib.closing(sqlite3.connect(self.db[contender])) as conn:
            return conn.execute(f"select count(*) from {table}").fetchone()[0]

    def run(self, contender: str, phase: str) -> Run:
        command, env = self.command(contender)
        self.nginx.statuses()
        run = measure(f"{contender}-{phase}", command, env, self.logs)
        run.feeds = len(self.farm.specs)
        run.statuses = self.nginx.statuses()
        if run.ok:
            before = self.counts.get(contender, 0)
            self.counts[contender] = self.stored(contender)
            run.new_items = self.counts[contender] - before
        else:
            tail = (self.logs / f"{contender}-{phase}.stderr").read_text(errors="replace")
            if not run.note and tail.strip():
                run.note = tail.strip().splitlines()[-1]
        return run


# -- baselines, run as `farm_bench.py _loop ...` and `farm_bench.py _reader ...` ---------------


def baseline_loop(db: str, urls_file: str) -> int:
    """Sequential feedparser with conditional requests, storing into SQLite."""
    import urllib.request

    import feedparser

    urls = Path(urls_file).read_text().split()
    conn = sqlite3.connect(db)
    conn.executescript(
        "create table if not exists feeds (url text primary key, etag text, modified text,"
        " title text, status int);"
        "create table if not exists entries (feed text, id text, title text, link text,"
        " summary text, published text, primary key (feed, id));"
    )
    state = {u: (e, m) for u, e, m in conn.execute("select url, etag, modified from feeds")}
    handlers = [urllib.request.ProxyHandler({})]
    statuses: Counter[int] = Counter()
    for url in urls:
        etag, modified = state.get(url, (None, None))
        d = feedparser.parse(url, etag=etag, modified=modified, handlers=handlers)
        status = d.get("status", 0)
        statuses[status] += 1
        rows = [
            (
                url,
                e.get("id") or e.get("link"),
                e.get("title"),
                e.get("link"),
                e.get("summary"),
                e.get("published"),
            )
            for e in d.entries
        ]
        with conn:
            conn.executemany("insert or ignore into entries values (?, ?, ?, ?, ?, ?)", rows)
            conn.execute(
                "insert or replace into feeds values (?, ?, ?, ?, ?)",
                (
                    url,
                    d.get("etag") or etag,
                    d.get("modified") or modified,
                    d.get("feed", {}).get("title"),
                    status,
                ),
            )
    conn.close()
    print(json.dumps({"statuses": statuses}))
    return 0


def baseline_reader(action: str, db: str, urls_file: str) -> int:
    from reader import make_reader

    reader = make_reader(db)
    try:
        if action == "add":
            for url in Path(urls_file).read_text().split():
                reader.add_feed(url, exist_ok=True)
        else:
            reader.update_feeds(workers=READER_WORKERS, scheduled=False)
    finally:
        reader.close()
    return 0


# -- the report -------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    nginx = subprocess.run([ensure_nginx(), "-v"], capture_output=True, text=True).stderr.strip()
    versions = []
    for module in ("feedparser", "reader"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions.append(f"{module} {version(module)}")
    return {
        "cpu": cpu,
        "cores": f"{cores} usable ({os.cpu_count()} online)",
        "ram": mem,
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "os": platform.platform(),
        "server": nginx.replace("nginx version: ", ""),
        "libraries": ", ".join(versions),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _mib(kb: int) -> str:
    return f"{kb / 1024:.0f} MiB"


def _secs(value: float) -> str:
    return f"{value:.1f} s" if value >= 10 else f"{value:.2f} s"


def run_table(runs: list[Run]) -> list[str]:
    head = (
        "| contender | poll | wall | CPU (tree) | largest process | all processes |"
        " feeds/s | new items/s | new items | nginx 200/304 |"
    )
    rows = [head, "|" + "---|" * 10]
    for r in runs:
        if not r.ok:
            rows.append(f"| {r.contender} | {r.phase} | FAILED (exit {r.exit}) {r.note} |||||||||")
            continue
        items = r.new_items or 0
        rows.append(
            f"| {r.contender} | {r.phase} | {_secs(r.seconds)} | {_secs(r.cpu)} |"
            f" {_mib(r.largest_kb)} | {_mib(r.all_kb)} ({r.processes} proc) |"
            f" {r.feeds / r.seconds:,.0f} | {items / r.seconds:,.0f} | {items:,} |"
            f" {r.statuses.get(200, 0)}/{r.statuses.get(304, 0)} |"
        )
    return rows


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    value: str
    target: str
    passed: bool | None  # None: not measured


def verdicts(runs: dict[tuple[str, str], Run], scale: dict[tuple[str, str], Run]) -> list[Verdict]:
    def secs(c: str, p: str) -> float | None:
        r = runs.get((c, p))
        return r.seconds if r and r.ok else None

    out: list[Verdict] = []

    def ratio(name: str, num: float | None, den: float | None, target: float, at_least: bool):
        if num is None or den is None or den <= 0:
            out.append(Verdict(name, "n/a", "", None))
            return
        value = num / den
        passed = value >= target if at_least else value <= target
        out.append(
            Verdict(name, f"{value:.2f}x", f"{'>=' if at_least else '<='} {target}x", passed)
        )

    rw = {p: secs("reelwatch", p) for p in PHASES}
    ratio("cold: loop / reelwatch", secs("loop", "cold"), rw["cold"], TARGET_COLD_LOOP, True)
    ratio("cold: reader / reelwatch", secs("reader", "cold"), rw["cold"], TARGET_COLD_READER, True)
    ratio("warm: reelwatch / loop", rw["warm"], secs("loop", "warm"), TARGET_WARM_LOOP, False)
    ratio("warm: reader / reelwatch", secs("reader", "warm"), rw["warm"], TARGET_WARM_READER, True)
    ratio(
        "changed: reelwatch / loop",
        rw["changed"],
        secs("loop", "changed"),
        TARGET_CHANGED_LOOP,
        False,
    )
    for label, table in (("", runs), (" at 10,000 feeds", scale)):
        rs = [r for (c, _p), r in table.items() if c == "reelwatch" and r.ok]
        if not rs:
            if label:
                out.append(Verdict("largest reelwatch process" + label, "not run", "", None))
            continue
        largest = max(r.largest_kb for r in rs)
        out.append(
            Verdict(
                "largest reelwatch process" + label + f" ({rs[0].feeds:,} feeds)" * (not label),
                _mib(largest),
                f"<= {TARGET_LARGEST_MIB} MiB",
                largest <= TARGET_LARGEST_MIB * 1024,
            )
        )
    for phase in PHASES:
        small, big = runs.get(("reelwatch", phase)), scale.get(("reelwatch", phase))
        if not (small and big and small.ok and big.ok):
            out.append(Verdict(f"{phase}: time per feed, 10,000 vs N", "not run", "", None))
            continue
        drift = (big.seconds / big.feeds) / (small.seconds / small.feeds) - 1
        out.append(
            Verdict(
                f"{phase}: time per feed, {big.feeds:,} vs {small.feeds:,} feeds",
                f"{1000 * big.seconds / big.feeds:.1f} vs {1000 * small.seconds / small.feeds:.1f}"
                f" ms ({drift:+.0%})",
                f"within {TARGET_PER_FEED_DRIFT:.0%}",
                abs(drift) <= TARGET_PER_FEED_DRIFT,
            )
        )
    return out


def verdict_table(vs: list[Verdict]) -> list[str]:
    rows = ["| target | measured | wanted | verdict |", "|---|---|---|---|"]
    for v in vs:
        mark = {True: "PASS", False: "FAIL", None: "-"}[v.passed]
        rows.append(f"| {v.name} | {v.value} | {v.target} | {mark} |")
    return rows


def _story_count(farm: Farm) -> int:
    return sum(len(p.relevant) + len(p.traps) + len(p.filler) for p in farm.pools.values())


def farm_line(farm: Farm) -> str:
    sizes = sorted(farm.bytes)
    atom = sum(s.atom for s in farm.specs)
    langs = Counter(s.lang for s in farm.specs)
    kinds = farm.kinds
    return (
        f"{len(farm.specs):,} feeds ({len(farm.specs) - atom:,} RSS 2.0, {atom:,} Atom; "
        + ", ".join(f"{k} {v}" for k, v in sorted(langs.items()))
        + f"), {farm.items:,} items, {sizes[0] / 1000:.0f}-{sizes[-1] / 1000:.0f} KB per feed "
        f"(median {sizes[len(sizes) // 2] / 1000:.0f} KB, {sum(sizes) / 1e6:.0f} MB in all); "
        f"items: {kinds['relevant'] / farm.items:.1%} AI-in-entertainment, "
        f"{kinds['trap'] / farm.items:.1%} look-alike traps"
    )


# -- the run ----------------------------------------------------------------------------------


def generate_farm(n: int, pools: dict[str, Pool]) -> Farm:
    farm = Farm(FARM / f"n{n}", feed_specs(n), pools, datetime.now(UTC).replace(microsecond=0))
    farm.dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"generating {n:,} feeds in {farm.www} ...", flush=True)
    farm.generate()
    print(f"  {farm_line(farm)} ({time.perf_counter() - started:.0f} s)", flush=True)
    return farm


def check(problems: list[str], ok: bool, message: str) -> None:
    if not ok:
        problems.append(message)
        print(f"  !! {message}", flush=True)


def bench_farm(
    farm: Farm, contenders: tuple[str, ...], problems: list[str]
) -> dict[tuple[str, str], Run]:
    nginx = Nginx(farm)
    port = nginx.start()
    print(f"  nginx pid {nginx.proc.pid if nginx.proc else '?'} on 127.0.0.1-{HOSTS}:{port}")
    runs: dict[tuple[str, str], Run] = {}
    try:
        c = Contenders(farm, nginx)
        if "reader" in contenders:
            c.setup_reader()
        n = len(farm.specs)
        expected_new = {"cold": farm.items, "warm": 0}
        expected_status = {"cold": Counter({200: n}), "warm": Counter({304: n})}
        for phase in PHASES:
            if phase == "changed":
                changed, new = farm.change(CHANGED_SHARE)
                expected_new["changed"] = new
                expected_status["changed"] = Counter({200: changed, 304: n - changed})
                print(f"  rewrote {changed:,} feeds with {new:,} new items", flush=True)
            repeats: dict[str, list[Run]] = {}
            for contender in contenders * (WARM_REPEATS if phase == "warm" else 1):
                print(f"  {contender} {phase} ...", end=" ", flush=True)
                run = c.run(contender, phase)
                done = repeats.setdefault(contender, [])
                done.append(run)
                runs[(contender, phase)] = sorted(done, key=lambda r: r.seconds)[len(done) // 2]
                print(
                    f"{_secs(run.seconds)}, CPU {_secs(run.cpu)}, largest {_mib(run.largest_kb)},"
                    f" new items {run.new_items}, nginx {dict(run.statuses)}"
                    + (f" FAILED: exit {run.exit} {run.note}" if not run.ok else ""),
                    flush=True,
                )
                label = f"{contender} {phase} ({n:,} feeds)"
                check(problems, run.ok, f"{label}: exit {run.exit} {run.note}")
                check(
                    problems,
                    run.new_items == expected_new[phase],
                    f"{label}: stored {run.new_items} new items, expected {expected_new[phase]}",
                )
                check(
                    problems,
                    run.statuses == expected_status[phase],
                    f"{label}: nginx answered {dict(run.statuses)},"
                    f" expected {dict(expected_status[phase])}",
                )
    finally:
        nginx.stop()
    return runs


def write_results(
    info: dict[str, str],
    farms: list[Farm],
    runs: dict[tuple[str, str], Run],
    scale: dict[tuple[str, str], Run],
    vs: list[Verdict],
    problems: list[str],
) -> None:
    lines = [
        "# Farm benchmark: latest results",
        "",
        "Written by `bench/farm_bench.py` (`make bench-farm`); see its docstring for what is",
        "measured and why. Whole processes, nginx on loopback, same farm for every contender.",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
        "## Farm",
        "",
        *[f"- {farm_line(f)}" for f in farms],
        "",
        "## Polls",
        "",
        *run_table(list(runs.values()) + list(scale.values())),
        "",
        "CPU is user + sys of the whole process tree (parse workers included); largest",
        "process is the peak RSS of the biggest single process; all processes is the",
        "peak of the tree's summed RSS, sampled every 100 ms (pages shared between the",
        "forkserver and its workers count once per process). new items are the rows the",
        "contender's database gained; nginx 200/304 are the answers nginx logged.",
        f"Warm rows are the median of {WARM_REPEATS} interleaved runs; the others one run.",
        "",
        f"The farm's items come from {sum(_story_count(f) for f in farms[:1]):,} distinct"
        " source stories (labelled set and real",
        "feeds), so each story is repeated in many feeds, as syndicated wire copy is;",
        "reelwatch clusters the relevant copies into",
        "stories, which is part of what its cold and changed polls pay for.",
        "",
        "## Targets",
        "",
        *verdict_table(vs),
        "",
    ]
    if problems:
        lines += ["## The measurement is INVALID", "", *[f"- {p}" for p in problems], ""]
    RESULTS.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_loop"]:
        return baseline_loop(*argv[1:])
    if argv[:1] == ["_reader"]:
        return baseline_reader(*argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--feeds", type=int, default=2_000, metavar="N", help="default 2000")
    parser.add_argument(
        "--scale",
        action="store_true",
        help=f"also time reelwatch alone on {SCALE_FEEDS:,} feeds (slow)",
    )
    parser.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    if args.feeds < 1:
        parser.error("--feeds must be at least 1")
    ensure_nginx()
    try:
        import reader  # noqa: F401
    except ImportError:
        raise SystemExit("the reader baseline needs: pip install -e '.[bench]'") from None

    info = machine()
    print("reelwatch farm benchmark on " + "; ".join(f"{k}: {v}" for k, v in info.items()))
    pools = load_pools()
    problems: list[str] = []
    farm = generate_farm(args.feeds, pools)
    runs = bench_farm(farm, CONTENDERS, problems)
    farms = [farm]
    scale: dict[tuple[str, str], Run] = {}
    if args.scale and not args.no_results:  # the N results, should the long part fail
        write_results(info, farms, runs, scale, verdicts(runs, scale), problems)
    if args.scale:
        big = generate_farm(SCALE_FEEDS, pools)
        farms.append(big)
        scale = bench_farm(big, ("reelwatch",), problems)
        shutil.rmtree(big.www, ignore_errors=True)  # 1 GB; regenerated on the next run
    vs = verdicts(runs, scale)

    print()
    print(f"reelwatch farm benchmark: {info['cpu']}, {info['cores']}, {info['ram']}")
    for f in farms:
        print(f"  {farm_line(f)}")
    for line in run_table(list(runs.values()) + list(scale.values())):
        print(line)
    print()
    for line in verdict_table(vs):
        print(line)
    if not args.no_results:
        write_results(info, farms, runs, scale, vs, problems)
        print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    if problems:
        print(f"INVALID measurement ({len(problems)} problem(s)):")
        for p in problems:
            print(f"  - {p}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
