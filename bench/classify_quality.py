"""Classification quality on the labelled set: precision, recall and F1.

tests/data/labelled/*.jsonl hold news items in English, Italian, Spanish,
French and German, each labelled relevant or not (AI in the creative industries)
and with its sub-topics. Part of the set is marked "holdout": the rules in
feeds.yaml were written looking only at the "dev" part, so the holdout figures
are the honest ones. Figures are printed for dev, holdout and all.

    python bench/classify_quality.py [--config feeds.yaml] [--errors dev]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.classify import compile_rules  # noqa: E402
from monitor.classify.text import guess_language  # noqa: E402
from monitor.config import load_config  # noqa: E402
from monitor.types import Item  # noqa: E402

DATA = ROOT / "tests" / "data" / "labelled"  # en_a, en_b, it, es, fr, de; dev2 (dev only)
GATE = "ai_entertainment"


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def evaluate(rows: list[dict], classifier, hidden: set[str]) -> tuple[dict, list[dict]]:
    rel = Counter()
    per_topic: dict[str, Counter] = {}
    errors = []
    now = datetime.now(UTC)
    for row in rows:
        text = f"{row['title']} {row['summary']}"
        lang = guess_language(text) or row["lang"]  # as a feed configured with its language
        item = Item("eval", row["id"], None, None, row["title"], row["summary"], now, lang)
        matches = classifier.classify(item)
        got = {m.topic for m in matches} - hidden
        relevant = GATE in got
        gold = bool(row["relevant"])
        rel["tp" if relevant and gold else "fp" if relevant else "fn" if gold else "tn"] += 1
        gold_topics = set(row["topics"])
        got_topics = got - {GATE}
        for topic in gold_topics | got_topics:
            c = per_topic.setdefault(topic, Counter())
            c["tp" if topic in gold_topics and topic in got_topics else
              "fp" if topic in got_topics else "fn"] += 1  # fmt: skip
        if relevant != gold or (gold and gold_topics != got_topics):
            errors.append({**row, "got_relevant": relevant, "got_topics": sorted(got_topics),
                           "terms": {m.topic: list(m.terms) for m in matches}})  # fmt: skip
    return {"relevance": rel, "topics": per_topic}, errors


def report(name: str, result: dict, topics: list[str]) -> None:
    rel = result["relevance"]
    p, r, f = prf(rel["tp"], rel["fp"], rel["fn"])
    n = sum(rel.values())
    print(f"\n== {name}: {n} items ({rel['tp'] + rel['fn']} relevant)")
    print(f"relevance   precision {p:.3f}  recall {r:.3f}  F1 {f:.3f}")
    print("            (targets: precision >= 0.92, F1 >= 0.90)")
    f1s = []
    for topic in topics:
        c = result["topics"].get(topic, Counter())
        tp, fp, fn = c["tp"], c["fp"], c["fn"]
        precision, recall, f1 = prf(tp, fp, fn)
        f1s.append(f1)
        print(f"  {topic:22} P {precision:.2f}  R {recall:.2f}  F1 {f1:.2f}", end="")
        print(f"   (gold {tp + fn}, found {tp + fp})")
    macro = sum(f1s) / len(f1s) if f1s else 0.0
    print(f"macro topic F1 {macro:.3f}   (target >= 0.75)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--config", default=str(ROOT / "feeds.yaml"))
    ap.add_argument("--errors", choices=["dev"], help="list the dev set's mistakes")
    args = ap.parse_args()
    config = load_config(args.config)
    classifier = compile_rules(config.rules())
    hidden = {tid for tid, t in config.topics.items() if t.hidden}
    rows = [
        json.loads(line)
        for path in sorted(DATA.glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    topics = sorted({t for r in rows for t in r["topics"]})
    for split in ("dev", "holdout", "all"):
        subset = [r for r in rows if split == "all" or r["split"] == split]
        result, errors = evaluate(subset, classifier, hidden)
        report(split, result, topics)
        if args.errors == split:
            for e in errors:
                print(f"\n  [{e['id']}] gold rel={e['relevant']} {sorted(e['topics'])}"
                      f" | got rel={e['got_relevant']} {e['got_topics']}\n    {e['title']}"
                      f"\n    {e['summary'][:200]}\n    terms: {e['terms']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
