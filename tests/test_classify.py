from __future__ import annotations

from datetime import UTC, datetime

import pytest

from monitor.classify import classify, compile_rules, keyword_rules
from monitor.types import Item

RULES = compile_rules(
    keyword_rules(
        {
            "ai": ["AI", "artificial intelligence", "intelligenza artificiale", "KI", "IA"],
            "deals": ["signs with", "partnership"],
        }
    )
)


def item(title: str, summary: str = "", categories: tuple[str, ...] = ()) -> Item:
    return Item("f", title, None, None, title, summary, datetime(2026, 1, 1, tzinfo=UTC), None,
                categories=categories)  # fmt: skip


@pytest.mark.parametrize(
    "title, summary, topics",
    [
        ("Lionsgate signs with Runway on AI models", "", {"ai", "deals"}),
        ("Lionsgate firma con Runway per l'intelligenza artificiale", "", {"ai"}),
        ("Netflix: la IA en el doblaje", "", {"ai"}),
        ("KI im Synchronstudio", "", {"ai"}),
        ("Ai Weiwei opens a show in Rome", "", set()),  # a name, not the acronym
        ("Premi ai registi italiani", "", set()),  # Italian preposition
        ("He said the film was great", "", set()),  # never a substring
        ("Brazil's new film fund", "The ministry said", set()),
        ("A quiet week", "Studios weigh Artificial Intelligence tools", {"ai"}),
    ],
)
def test_topics(title: str, summary: str, topics: set[str]) -> None:
    assert {m.topic for m in classify(RULES, item(title, summary))} == topics


def test_title_counts_double_and_terms_explain_the_match() -> None:
    (in_title,) = classify(RULES, item("AI dubbing arrives"))
    (in_summary,) = classify(RULES, item("Dubbing arrives", "with AI"))
    assert in_title.score == 2 * in_summary.score
    assert in_title.terms == ("AI",)


def test_categories_are_searched() -> None:
    (match,) = classify(RULES, item("Dubbing arrives", categories=("Artificial Intelligence",)))
    assert match.topic == "ai"
