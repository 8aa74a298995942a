"""The classifier as tables of (text, language, expected topics): pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.classify import ALL, RuleSet, TopicRule, WatchlistRule, compile_rules
from monitor.config import load_config
from monitor.types import Item

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def item(title: str, summary: str = "", lang: str | None = None, categories=()) -> Item:
    return Item("f", title, None, None, title, summary, NOW, lang, categories=tuple(categories))


def topics_of(rules: RuleSet, title: str, summary: str = "", lang: str | None = None) -> set[str]:
    return {m.topic for m in compile_rules(rules).classify(item(title, summary, lang))}


def one(query: str, **kw) -> RuleSet:
    return RuleSet(
        topics=(TopicRule("t", "T", ((ALL, query),)),),
        watchlists=(
            WatchlistRule("studios", (("Lionsgate", ("Lions Gate",)), ("Disney", ()))),
            WatchlistRule("ai_cos", (("Runway", ("RunwayML",)), ("OpenAI", ("Sora",)))),
        ),
        **kw,
    )


@pytest.mark.parametrize(
    "query, title, matches",
    [
        ("AI", "AI dubbing arrives", True),
        ("AI", "He said the film was great", False),  # never a substring
        ("AI", "Ai Weiwei opens a show in Rome", False),  # capitals are part of an acronym
        ("AI", "Premi ai registi italiani", False),  # the Italian preposition
        ("AI", "l'AI entra nel cinema", True),  # elision
        ("AI", "AI-generated trailer", True),  # a dash is a word boundary
        ("ai", "Ai Weiwei opens a show", True),  # lower case ignores case
        ("IA", "dell'IA generativa nel doppiaggio", True),
        ('"intelligenza artificiale"', "L'Intelligenza\u00a0Artificiale al cinema", True),
        ('"intelligence artificielle"', "L'intelligence artificielle à Cannes", True),
        ('"künstliche Intelligenz"', "Kunstliche Intelligenz im Kino", True),  # accents fold
        ("cinéma", "Le cinema francais", True),
        ("deepfake*", "Deepfakes of actors spread", True),
        ("deepfake*", "Undeepfake", False),
        ('"digital replica*"', "Digital replicas in the contract", True),
        ("AI AND film", "AI in film", True),
        ("AI film", "AI in film", True),  # a space means AND
        ("AI AND film", "AI in music", False),
        ("AI OR KI", "KI im Kino", True),
        ("AI NOT robot*", "AI robots take over", False),
        ("AI AND NOT (robot OR android)", "AI in dubbing", True),
        ('"AI" NEAR/3 (film OR studio)', "AI studio deal signed", True),
        ('"AI" NEAR/3 (film OR studio)', "AI is everywhere now in every single film", False),
        ("title:AI", "Dubbing news", False),
        ("@studios AND @ai_cos", "Lionsgate signs with Runway", True),
        ("@studios AND @ai_cos", "Lions Gate and Sora", True),
        ("@ai_cos", "Fashion week: the runway looks", False),  # names match as written
        ("SAG-AFTRA", "SAG AFTRA reaches a deal", True),
    ],
)
def test_query_language(query: str, title: str, matches: bool) -> None:
    assert ("t" in topics_of(one(query), title)) is matches


def test_title_scope_and_summary() -> None:
    rules = one("summary:AI")
    assert topics_of(rules, "News", "with AI") == {"t"}
    assert topics_of(rules, "AI news", "nothing") == set()


def test_per_language_queries() -> None:
    rules = RuleSet(topics=(TopicRule("ai", "AI", ((ALL, "AI"), ("it", "IA"), ("es", "IA"))),))
    assert topics_of(rules, "La IA en el doblaje", lang="es") == {"ai"}
    assert topics_of(rules, "Iowa IA results", lang="en") == set()  # IA is not AI in English
    assert topics_of(rules, "La IA", lang=None) == {"ai"}  # unknown language: every list


def test_requires_topic_refs_hidden_and_min_score() -> None:
    rules = RuleSet(
        topics=(
            TopicRule("ai", "AI", ((ALL, "AI"),), hidden=True),
            TopicRule("gate", "Gate", ((ALL, "#ai AND (film OR music)"),)),
            TopicRule("deals", "Deals", ((ALL, "deal"),), requires="gate"),
            TopicRule("zebra", "Zebra", ((ALL, "zebra"),)),
            TopicRule("strong", "Strong", ((ALL, "AI OR film"),), min_score=4),
        )
    )
    assert topics_of(rules, "AI film deal") == {"gate", "deals", "strong"}
    assert topics_of(rules, "AI bank deal") == set()  # deals needs the gate; ai is hidden
    assert topics_of(rules, "A zebra in the film") == {"zebra"}  # stands alone
    assert topics_of(rules, "AI", "film") == {"gate"}  # 2 + 1 < 4


def test_explanation_has_terms_scores_and_positions() -> None:
    config = load_config(Path(__file__).parent.parent / "feeds.yaml")
    title = "Lionsgate firma con Runway: l'intelligenza artificiale entra nel cinema"
    matches = compile_rules(config.rules()).classify(item(title, lang="it"))
    by_topic = {m.topic: m for m in matches}
    assert {"ai_entertainment", "deals_partnerships"} <= set(by_topic)
    gate = by_topic["ai_entertainment"]
    assert {"intelligenza artificiale", "Lionsgate", "Runway", "cinema"} <= set(gate.terms)
    assert ("Runway", "title", 20) in gate.positions
    assert gate.score >= 8


def test_title_weighs_double() -> None:
    rules = one("AI")
    (in_title,) = compile_rules(rules).classify(item("AI dubbing"))
    (in_summary,) = compile_rules(rules).classify(item("Dubbing", "with AI"))
    assert in_title.score == 2 * in_summary.score


def test_categories_are_searched() -> None:
    (match,) = compile_rules(one("AI")).classify(item("News", categories=["AI"]))
    assert match.positions == (("AI", "category", 0),)
