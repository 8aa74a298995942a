"""Which topics an item is about, and why. Pure: rules in, matches out.

This is the minimal engine of the foundation: a topic is a list of keywords
or phrases matched as whole words, case-insensitively (short all-capital terms
such as AI only in capitals), in the title (weight 2), the summary and the
categories (weight 1). The classification issue replaces
it with the query language; callers only see `compile_rules` and `classify`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence

from monitor.types import Item, Match

# What a user wrote: (topic id, its terms) pairs. Hashable, so each worker
# process compiles it once (rules_for) and jobs carry only strings.
TopicSpec = tuple[tuple[str, tuple[str, ...]], ...]
# (topic id, compiled pattern per term) pairs.
TopicRules = tuple[tuple[str, tuple[tuple[str, re.Pattern[str]], ...]], ...]

TITLE_WEIGHT = 2.0
BODY_WEIGHT = 1.0


def is_acronym(term: str) -> bool:
    """Short all-capital terms (AI, KI, IA) match only in capitals: "ai registi" is Italian."""
    letters = [c for c in term if c.isalpha()]
    return 0 < len(letters) <= 5 and all(c.isupper() for c in letters)


def _term_pattern(term: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in term.split()]
    flags = 0 if is_acronym(term) else re.IGNORECASE
    # (?<!\w) / (?!\w) are Unicode-aware word boundaries: "AI" never matches "said".
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", flags)


def topic_spec(topics: Mapping[str, Sequence[str]]) -> TopicSpec:
    return tuple((topic, tuple(terms)) for topic, terms in topics.items())


@functools.lru_cache(maxsize=8)
def rules_for(spec: TopicSpec) -> TopicRules:
    return compile_rules(dict(spec))


def compile_rules(topics: Mapping[str, Sequence[str]]) -> TopicRules:
    return tuple(
        (topic, tuple((term, _term_pattern(term)) for term in terms))
        for topic, terms in topics.items()
    )


def classify(rules: TopicRules, item: Item) -> tuple[Match, ...]:
    body = " ".join((item.summary, *item.categories))
    matches = []
    for topic, terms in rules:
        score = 0.0
        hits = []
        for term, pattern in terms:
            if pattern.search(item.title):
                score += TITLE_WEIGHT
            elif pattern.search(body):
                score += BODY_WEIGHT
            else:
                continue
            hits.append(term)
        if hits:
            matches.append(Match(topic=topic, terms=tuple(hits), score=score))
    return tuple(matches)
