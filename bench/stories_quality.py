"""Story clustering: pairwise precision and recall on the labelled set, and the cost per
new item as stored items grow (1k and 50k), against brute-force all-pairs comparison.

Quality: tests/data/stories/items.jsonl holds reports labelled with the event ("story")
they report: cross-language write-ups, syndicated copies and look-alike events. Each is
classified with feeds.yaml's topics and stored, in publication order, through the real
storage path (SQLite in a temporary directory), which assigns stories as the service
does. Pairs of items in one predicted story are compared with pairs in one labelled
story: precision = right pairs / predicted pairs, recall = right pairs / labelled pairs.
Targets: precision >= 0.95, recall >= 0.85.

Cost: N synthetic stored stories (1,000, then 50,000, all inside the story window, the
worst case), then 300 new items are stored and assigned; the time per new item should
not grow with N. The baseline, in the same run, compares each new item's signature with
every stored one (all pairs), whose cost grows with N.

    python bench/stories_quality.py [--sizes 1000,50000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.classify import compile_rules  # noqa: E402
from monitor.config import load_config  # noqa: E402
from monitor.stories import StoryRules, same_story, signature  # noqa: E402
from monitor.types import FeedUpdate, Item, Match, ParsedFeed  # noqa: E402
from storage import Repository, make_engine  # noqa: E402

DATA = ROOT / "tests" / "data" / "stories" / "items.jsonl"


def _repo(directory: str, rules: StoryRules, gate: str | None) -> Repository:
    repo = Repository(make_engine(f"sqlite:///{directory}/stories.db"))
    repo.create_schema()
    repo.configure_stories(rules, gate)
    return repo


def _store(repo: Repository, items: list[Item], matches: dict[str, tuple[Match, ...]],
           now: datetime) -> None:  # fmt: skip
    feed = items[0].feed
    upd = FeedUpdate("ok", 200, None, None, None, None, 0, now, now, now, False, 1)
    parsed = ParsedFeed(feed, None, tuple(items), matches)
    repo.store_poll(feed, f"https://{feed}.example/rss", upd, parsed, None, now)


def quality(config_path: str) -> None:
    config = load_config(config_path)
    classifier = compile_rules(config.rules())
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line]
    rows.sort(key=lambda r: r["published"])
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repo(tmp, config.stories.rules(), config.gate())
        unmatched = 0
        for row in rows:
            when = datetime.fromisoformat(row["published"].replace("Z", "+00:00"))
            item = Item(row["feed"], row["id"], None, row["url"], row["title"], row["summary"],
                        when, row["lang"])  # fmt: skip
            found = classifier.classify(item)
            if not found:  # the labelled reports are all relevant; say if the rules disagree
                unmatched += 1
                found = (Match(config.gate() or "ai", ("AI",), 1.0),)
            _store(repo, [item], {item.identity: found}, when)
        predicted: dict[str, int] = {}
        ids = {s.id: s for s in repo.stored_items(range(1, len(rows) + 1)).values()}
        story_of = repo.story_of(list(ids))
        for item_id, stored in ids.items():
            predicted[stored.item.identity] = story_of[item_id].story_id
    gold = {r["id"]: r["story"] for r in rows}
    tp = fp = fn = 0
    for a, b in itertools.combinations(sorted(gold), 2):
        same_gold = gold[a] == gold[b]
        same_pred = predicted[a] == predicted[b]
        tp += same_gold and same_pred
        fp += same_pred and not same_gold
        fn += same_gold and not same_pred
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    print(f"labelled set: {len(rows)} items, {len(set(gold.values()))} stories; "
          f"predicted {len(set(predicted.values()))} stories")  # fmt: skip
    if unmatched:
        print(f"  ({unmatched} items matched no topic of feeds.yaml; stored as relevant anyway)")
    print(f"pairwise precision {precision:.3f} (target >= 0.95)  "
          f"recall {recall:.3f} (target >= 0.85)")  # fmt: skip
    merged = defaultdict(set)
    for item_id, story in predicted.items():
        merged[story].add(gold[item_id])
    wrong = [sorted(g) for g in merged.values() if len(g) > 1]
    if wrong:
        print("  merged events:", "; ".join(" + ".join(g) for g in wrong[:10]))
    split = defaultdict(set)
    for item_id, story in predicted.items():
        split[gold[item_id]].add(story)
    broken = sorted(g for g, s in split.items() if len(s) > 1)
    if broken:
        print("  events split in several stories:", ", ".join(broken[:15]))


WORDS = [f"{a}{b}" for a in "bcdfgklmnprstvz" for b in ("ara", "eno", "ilo", "umo", "eta", "ixa")]


def synthetic(rng: random.Random, n: int, base: datetime) -> list[Item]:
    items = []
    for i in range(n):
        names = [f"{rng.choice(WORDS).capitalize()}{rng.randrange(10**6)}" for _ in range(3)]
        words = " ".join(rng.choice(WORDS) + str(rng.randrange(1000)) for _ in range(12))
        title = f"{names[0]} and {names[1]} sign a deal"
        summary = f"{names[0]} met {names[1]} and {names[2]} about {words}."
        items.append(Item("synthetic", f"s{i}", None, f"https://synthetic.example/{i}", title,
                          summary, base + timedelta(seconds=i), "en"))  # fmt: skip
    return items


def cost(sizes: list[int]) -> None:
    rules = StoryRules(window=timedelta(days=3650))  # every stored story stays a candidate
    gate = "ai_entertainment"
    matches = (Match(gate, ("AI",), 2.0), Match("deals_partnerships", ("deal",), 1.0))
    base = datetime.fromisoformat("2026-09-01T00:00:00+00:00")
    print(f"\n{'stored':>8} {'reelwatch ms/item':>18} {'all-pairs ms/item':>18}")
    results = []
    for n in sizes:
        rng = random.Random(n)
        stored = synthetic(rng, n, base)
        fresh = synthetic(random.Random(-n), 300, base + timedelta(days=1))
        with tempfile.TemporaryDirectory() as tmp:
            repo = _repo(tmp, rules, gate)
            for chunk in range(0, n, 1000):
                batch = stored[chunk : chunk + 1000]
                _store(repo, batch, {i.identity: matches for i in batch}, base)
            t0 = time.perf_counter()
            for item in fresh:  # one poll per new item: the lookup runs per item
                _store(repo, [item], {item.identity: matches}, base + timedelta(days=1))
            ours = (time.perf_counter() - t0) / len(fresh) * 1000
        sigs = [signature(i, matches, gate) for i in stored]
        t0 = time.perf_counter()
        for item in fresh[:30]:
            new = signature(item, matches, gate)
            for sig in sigs:
                same_story(new, sig, rules)
        brute = (time.perf_counter() - t0) / 30 * 1000
        results.append((n, ours, brute))
        print(f"{n:>8} {ours:>18.2f} {brute:>18.2f}")
    (n0, o0, b0), (n1, o1, b1) = results[0], results[-1]
    print(
        f"from {n0} to {n1} stored: reelwatch's cost per item x{o1 / o0:.2f}, "
        f"all-pairs x{b1 / b0:.1f} (reelwatch flat: {'PASS' if o1 / o0 < 2 else 'FAIL'})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--config", default=str(ROOT / "feeds.yaml"))
    ap.add_argument("--sizes", default="1000,50000")
    args = ap.parse_args()
    quality(args.config)
    cost([int(s) for s in args.sizes.split(",")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
