"""Which topics an item is about, and why. Pure: rules in, matches out.

Topics are queries in a small boolean language (query.py) over terms, phrases,
watchlists of entities and other topics; engine.py compiles them into one
Aho-Corasick matcher. Callers use `rules_for` and `classify`.
"""

from __future__ import annotations

import functools

from monitor.classify.engine import (
    ALL,
    Classifier,
    RuleError,
    RuleSet,
    TopicRule,
    WatchlistRule,
    compile_rules,
    is_acronym,
    keyword_rules,
)
from monitor.types import Item, Match

__all__ = [
    "ALL",
    "Classifier",
    "RuleError",
    "RuleSet",
    "TopicRule",
    "WatchlistRule",
    "classify",
    "compile_rules",
    "is_acronym",
    "keyword_rules",
    "rules_for",
]


@functools.lru_cache(maxsize=4)
def rules_for(rules: RuleSet) -> Classifier:
    """The compiled classifier for a rule set, compiled once per process."""
    return compile_rules(rules)


def classify(classifier: Classifier, item: Item) -> tuple[Match, ...]:
    return classifier.classify(item)
