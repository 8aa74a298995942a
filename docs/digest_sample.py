"""Render a sample weekly digest (docs/digest-sample.html) from the labelled set's
relevant items, for the screenshot the README shows: `make digest-screenshot`."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alerts.digest import DigestSource, Period, build_digest, render_digest  # noqa: E402
from monitor.classify import compile_rules  # noqa: E402
from monitor.config import load_config  # noqa: E402
from monitor.types import Item  # noqa: E402

FEEDS = ["thr", "variety", "deadline", "billboard", "theverge", "thr-roma", "screendaily"]


def main() -> None:
    config = load_config(ROOT / "feeds.yaml")
    classifier = compile_rules(config.rules())
    period = Period(datetime(2026, 11, 16, 7, tzinfo=UTC), datetime(2026, 11, 23, 7, tzinfo=UTC))
    rows = [json.loads(line) for line in (ROOT / "tests/data/labelled/en_a.jsonl").open()]
    sources = []
    for i, row in enumerate(r for r in rows if r["relevant"]):
        if i >= 14:
            break
        seen = period.start + timedelta(hours=11 * i + 3)
        item = Item("x", row["id"], None, None, row["title"], row["summary"], seen, "en")
        matches = classifier.classify(item)
        coverage = 3 if i == 0 else 2 if i == 3 else 1  # a few stories carried by several
        for k in range(coverage):
            feed = FEEDS[(i + k) % len(FEEDS)]
            url = f"https://{feed}.example/{row['id']}"
            sources.append(DigestSource(feed, row["title"], url, row["summary"], "en", seen,
                                        matches))  # fmt: skip
    labels = {tid: t.label for tid, t in config.topics.items() if not t.hidden}
    counts: dict[str, int] = {}
    for s in sources:
        for m in s.matches:
            counts[m.topic] = counts.get(m.topic, 0) + 1
    # last week: about half as much, and as much on likeness
    previous = {t: n if t == "likeness_deepfakes" else max(0, n // 2 - 1)
                for t, n in counts.items()}  # fmt: skip
    content = build_digest(
        name="weekly", language="en", timezone="Europe/Rome", period=period, sources=sources,
        labels=labels, gate=config.gate(), counts=counts, previous_counts=previous,
        health={"thr-roma": ["failing (2d)"]}, feeds_total=len(config.feeds),
    )  # fmt: skip
    _, html = render_digest(content)
    out = ROOT / "docs" / "digest-sample.html"
    out.write_text(html, encoding="utf-8")
    print(out)


if __name__ == "__main__":
    main()
