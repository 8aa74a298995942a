"""Classification speed: items per second for the default pack and a 2,000-term pack.

What is measured
----------------
The corpus is every item of the real outlet documents in tests/fixtures/ (and, when
present beside the project, ../shared/fixtures/feeds/real/), parsed once before any
timing and repeated to ``--items`` items (default 20,000). Each contender classifies
the whole corpus on one core, in this process:

* reelwatch, default pack: the topics and watchlists of feeds.yaml, compiled once
  (one Aho-Corasick automaton), ``classifier.classify(item)`` per item.
* reelwatch, generated packs: the default pack plus 20 topics of 100 terms each
  (2,000 terms). The realistic one is a watchlist of 2,000 company and studio names of
  which a twentieth occur in the corpus (most names on a big list are not in any given
  day's news); the worst case takes all 2,000 from the corpus's own proper nouns, so
  nearly every item is assigned a topic. The automaton's cost per item does not grow
  with terms; what is found (hits, matches, explanations) costs what it costs.
* the baseline, a naive loop: for every item, ``pattern.search(text)`` for each term's
  precompiled ``\\b...\\b`` case-insensitive regex, over the realistic pack's 2,000 terms (and,
  separately, over the default pack's terms).

Figures are ratios measured in the same run (the machines are shared and noisy):
targets are >= 20,000 items/s for the default pack (the one absolute figure the issue
asks for; it is printed with the ratio against the naive loop so a slow machine shows
as such) and the realistic 2,000-term pack within 2x of the default pack's time per item.

    python bench/classify_speed.py [--items 20000] [--config feeds.yaml]
"""

from __future__ import annotations

import argparse
import itertools
import random
import re
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.classify import ALL, RuleSet, TopicRule, compile_rules  # noqa: E402
from monitor.config import load_config  # noqa: E402
from monitor.errors import ParseError  # noqa: E402
from monitor.parse import ParseJob, parse_document  # noqa: E402
from monitor.types import Item  # noqa: E402

FIXTURE_DIRS = [ROOT / "tests" / "fixtures", ROOT.parent / "shared" / "fixtures" / "feeds" / "real"]
_NAME = re.compile(r"\b[^\W\d_a-z][^\W\d_]{2,}\b")
# capitalised words that are not names: sentence starts, headline case
_STOP = set(
    "the and for with from that this what when where how why who new first after "
    "about into over will its his her their our your are was has have not but all "
    "more most one two best top watch review exclusive here there".split()
)


def corpus(n: int) -> list[Item]:
    now = datetime.now(UTC)
    items: dict[tuple[str, str], Item] = {}
    for directory in FIXTURE_DIRS:
        for path in sorted(directory.glob("*.xml")) if directory.is_dir() else []:
            url = f"http://127.0.0.1/{path.name}"
            job = ParseJob(path.stem, url, path.read_bytes(), {}, None, now)
            try:
                parsed = parse_document(job)
            except ParseError:
                continue
            for item in parsed.items:
                items.setdefault((item.title, item.summary), item)
    distinct = list(items.values())
    print(f"corpus: {len(distinct)} distinct real items, repeated to {n}")
    return [item for item, _ in zip(itertools.cycle(distinct), range(n), strict=False)]


def generated_terms(items: list[Item], count: int, seed: int = 7) -> list[str]:
    """A watchlist-like pack: names and capitalised phrases taken from the corpus.

    Big rule packs are lists of companies, people, titles and products; the corpus's
    own proper nouns ("Warner Bros", "Cannes", "Nintendo") are such terms, and they
    do hit. Half single names, half two-word names, shuffled into 20 topics.
    """
    names: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    for item in items[:5000]:
        for text in (item.title, item.summary):
            words = _NAME.findall(text)
            names.update(w for w in words if w.lower() not in _STOP)
            pairs.update(
                f"{a} {b}" for a, b in itertools.pairwise(words)
                if f"{a} {b}" in text and a.lower() not in _STOP
            )  # fmt: skip
    rng = random.Random(seed)
    pool = [w for w, _ in names.most_common(count)] + [p for p, _ in pairs.most_common(count)]
    rng.shuffle(pool)
    terms = list(dict.fromkeys(pool))[:count]
    while len(terms) < count:  # a tiny corpus: pad with names that never match
        terms.append(f"Zzname{len(terms)}")
    return terms


def unseen_names(count: int, seed: int = 11) -> list[str]:
    """Company- and person-like names that the corpus never mentions."""
    rng = random.Random(seed)
    syllables = "ka ro vin tel mar zu pe lo sha dri nex qua bel tor fen lu gra mo vek zi".split()
    kinds = ["", " Studios", " Pictures", " Records", " Games", " Media", " Labs"]
    names: set[str] = set()
    while len(names) < count:
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))).capitalize()
        names.add(word + rng.choice(kinds))
    return sorted(names)


def generated_pack(base: RuleSet, terms: list[str], topics: int = 20) -> RuleSet:
    per = len(terms) // topics
    extra = tuple(
        TopicRule(
            f"gen{i:02}",
            f"Generated {i}",
            ((ALL, " OR ".join(f'"{t}"' for t in terms[i * per : (i + 1) * per])),),
        )
        for i in range(topics)
    )
    return RuleSet(topics=base.topics + extra, watchlists=base.watchlists)


def default_terms(rules: RuleSet) -> list[str]:
    """The quoted phrases and bare words of the default pack, for the naive loop."""
    terms: set[str] = set()
    for topic in rules.topics:
        for _, query in topic.queries:
            terms.update(re.findall(r'"([^"]+)"', query))
            bare = re.sub(r'"[^"]*"|\b(?:AND|OR|NOT|NEAR/\d+)\b|[@#][\w-]+|\w+:|[()*]', " ", query)
            terms.update(bare.split())
    for wl in rules.watchlists:
        for name, aliases in wl.entities:
            terms.update((name, *aliases))
    return sorted(terms)


def time_classifier(classifier, items: list[Item]) -> tuple[float, int]:
    matched = 0
    start = time.perf_counter()
    for item in items:
        matched += len(classifier.classify(item))
    return time.perf_counter() - start, matched


def time_naive(terms: list[str], items: list[Item]) -> tuple[float, int]:
    patterns = [re.compile(rf"\b{re.escape(t)}\b", re.IGNORECASE) for t in terms]
    matched = 0
    start = time.perf_counter()
    for item in items:
        text = f"{item.title}\n{item.summary}\n{' '.join(item.categories)}"
        if any([p.search(text) for p in patterns]):  # every term, as a rule engine must
            matched += 1
    return time.perf_counter() - start, matched


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--terms", type=int, default=2_000)
    ap.add_argument("--config", default=str(ROOT / "feeds.yaml"))
    args = ap.parse_args()

    items = corpus(args.items)
    base = load_config(args.config).rules()
    seen = generated_terms(items, args.terms)
    # A realistic big pack: 2,000 watchlist names of which a twentieth turn up in the
    # news; and the worst case, 2,000 names that all come from the corpus itself.
    mixed = seen[: args.terms // 20] + unseen_names(args.terms - args.terms // 20)
    random.Random(3).shuffle(mixed)
    t0 = time.perf_counter()
    default = compile_rules(base)
    t1 = time.perf_counter()
    big = compile_rules(generated_pack(base, mixed))
    worst = compile_rules(generated_pack(base, seen))
    t2 = time.perf_counter()
    print(f"compile: default pack {1000 * (t1 - t0):.1f} ms, "
          f"two packs of +{args.terms} terms {1000 * (t2 - t1):.1f} ms")  # fmt: skip

    contenders = [
        ("reelwatch, default pack", default),
        (f"reelwatch, default + {args.terms} terms (5% seen)", big),
        (f"reelwatch, default + {args.terms} corpus names", worst),
    ]
    for _, classifier in contenders:  # warm up: first-call allocations
        time_classifier(classifier, items[:500])
    rates, matches = [], []
    for _, classifier in contenders:
        seconds, found = time_classifier(classifier, items)
        rates.append(len(items) / seconds)
        matches.append(found / len(items))
    naive_n = min(len(items), 2000)  # the naive loop is slow: time it on a slice
    naive = [
        ("naive re.search loop, default pack terms", default_terms(base)),
        (f"naive re.search loop, {args.terms} terms", mixed),
    ]
    naive_rates = [naive_n / time_naive(terms, items[:naive_n])[0] for _, terms in naive]

    print(f"\n{len(items)} items, one core\n{'contender':48} {'items/s':>9}  topics/item")
    for (name, _), rate, per in zip(contenders, rates, matches, strict=True):
        print(f"{name:48} {rate:9,.0f}  {per:.2f}")
    for (name, _), rate in zip(naive, naive_rates, strict=True):
        print(f"{name:48} {rate:9,.0f}")
    d_rate, b_rate, w_rate = rates
    print(f"\nreelwatch vs naive loop: default pack {d_rate / naive_rates[0]:.0f}x, "
          f"{args.terms}-term pack {b_rate / naive_rates[1]:.0f}x faster")  # fmt: skip
    print(f"worst case (every item is assigned {matches[2]:.1f} topics on average): "
          f"{d_rate / w_rate:.2f}x the default pack's time per item")  # fmt: skip
    ok_rate, slowdown = d_rate >= 20_000, d_rate / b_rate
    verdict = "PASS" if ok_rate else "FAIL"
    print(f"default pack: {d_rate:,.0f} items/s (target >= 20,000): {verdict}")
    print(f"{args.terms}-term pack costs {slowdown:.2f}x the default pack's time per item "
          f"(target <= 2x): {'PASS' if slowdown <= 2.0 else 'FAIL'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
