"""The classifier as tables of (text, language, expected topics): pure, no I/O."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.classify import ALL, RuleSet, TopicRule, WatchlistRule, compile_rules
from monitor.classify.engine import RuleError
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
        ("AI NEAR/2 film NEAR/2 studio NEAR/2 deal", "AI film studio deal", True),
        ("AI NEAR/2 film NEAR/2 studio NEAR/2 deal", "AI film studio: a long tale, no deal", False),
        ("film NEAR/5 film", "An AI film", False),  # a word is not near itself
        ("film NEAR/5 film", "AI film, a film of our times", True),
        ('studio NEAR/3 "studio deal"', "AI studio deal signed", False),  # nor near its phrase
        ("title:AI", "Dubbing news", False),
        ("@studios AND @ai_cos", "Lionsgate signs with Runway", True),
        ("@studios AND @ai_cos", "Lions Gate and Sora", True),
        ("@ai_cos", "Fashion week: the runway looks", False),  # names match as written
        ("SAG-AFTRA", "SAG AFTRA reaches a deal", True),
        ('"diritto d autore"', "La causa sul diritto d\u2019autore", True),  # a ’ too
        ('"diritto d autore"', "Il diritto d'autore e l'IA", True),
        ("\u201cdigital replica\u201d OR deepfake", "Digital replica rules", True),  # curly
        ("\u00abintelligenza artificiale\u00bb", "L'intelligenza artificiale al cinema", True),
        ('"and" AND AI', "Lionsgate and Runway: the AI deal", True),  # a quoted word
        ("Now And Then", "Now and then: the Beatles song finished with AI", True),  # a title
        ("US$ OR [REC]", "[REC] remake in the works", True),  # not regular expressions
    ],
)
def test_query_language(query: str, title: str, matches: bool) -> None:
    assert ("t" in topics_of(one(query), title)) is matches


def test_a_long_near_chain_on_a_repetitive_item_is_classified_at_once() -> None:
    # each NEAR once multiplied the hits it passed up: 12 of them over a title that
    # repeats its term ran for minutes, holding a parse worker (a hang check, not a timing)
    classifier = compile_rules(one(" NEAR/5 ".join(["film"] * 12)))
    found: list[object] = []
    worker = threading.Thread(
        target=lambda: found.extend(classifier.classify(item("film studio film " * 10))),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "classifying one item took more than 30 s"
    assert [m.topic for m in found] == ["t"]  # type: ignore[attr-defined]


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


DEFAULT_PACK = load_config(Path(__file__).parent.parent / "feeds.yaml").rules()


@pytest.mark.parametrize(
    "title, summary, lang, expected",
    [
        # AI used in production, and the business, law and labour around it
        ("Lionsgate signs with Runway to train an AI model on its film library", "", "en",
         {"ai_entertainment", "deals_partnerships"}),
        ("Video game voice actors end strike over AI", "SAG-AFTRA members ratify a contract "
         "with protections against digital replicas.", "en",
         {"ai_entertainment", "labor_unions", "likeness_deepfakes", "games"}),
        ("Doppiatori in piazza contro l'IA", "Il sindacato chiede tutele per le voci "
         "clonate nel doppiaggio.", "it",
         {"ai_entertainment", "labor_unions", "likeness_deepfakes"}),
        ("GEMA verklagt Suno wegen KI-Musik", "Das Gericht soll über Urheberrecht "
         "entscheiden.", "de", {"ai_entertainment", "litigation_copyright", "music"}),
        ("Un film français doublé en allemand par l'IA", "Les voix des acteurs ont été "
         "clonées.", "fr", {"ai_entertainment", "production_use", "likeness_deepfakes"}),
        # copyright named in a policy story is no lawsuit; a copyright claim is one
        ("Publishers urge Congress to protect copyright from AI training", "Book authors "
         "want a licensing rule for generative models.", "en",
         {"ai_entertainment", "law_regulation"}),
        ("Authors file copyright claims against an AI audiobook startup", "", "en",
         {"ai_entertainment", "litigation_copyright"}),
        # a voice-controlled game is no voice clone
        ("Ubisoft shows a voice-controlled AI squad for its shooter", "Players give "
         "spoken orders to AI teammates.", "en", {"ai_entertainment", "games"}),
        # generative media without the word AI; a union named like a finance word
        ("Doublage automatisé : une start-up lyonnaise lève 20 millions d'euros", "Elle "
         "double des séries en conservant le timbre des comédiens.", "fr",
         {"ai_entertainment", "funding_business"}),
        ("xAI raises $10 billion in debt and equity for its chatbot", "", "en", set()),
        ("Apple TV+ orders a thriller about a rogue superintelligence", "The series follows "
         "an AI running the power grid.", "en", set()),
        # a union's contract is labour news; a deal an AI company signs is a deal
        ("Doppiaggio, firmato il nuovo accordo collettivo: tutele contro l'IA", "Il "
         "sindacato dei doppiatori ottiene il consenso per le voci.", "it",
         {"ai_entertainment", "labor_unions"}),
        ("SAG-AFTRA signs a deal with ElevenLabs for licensed actor voices", "", "en",
         {"ai_entertainment", "deals_partnerships", "labor_unions"}),
        # a survey of creators is opinion; a platform's disclosure rule is a rule; a
        # machine-made dub is AI used on a work
        ("Umfrage: Jedes zweite Studio nutzt generative KI", "Viele Spieleentwickler "
         "sorgen sich um ihre Jobs.", "de", {"ai_entertainment", "ethics_opinion", "games"}),
        ("Deutscher Filmpreis führt Offenlegungspflicht für KI-Einsatz ein", "Wer einen "
         "Film einreicht, muss generative Werkzeuge angeben.", "de",
         {"ai_entertainment", "law_regulation"}),
        ("Fans pan the machine-made English dub of an anime series", "The streamer used "
         "synthetic voices.", "en",
         {"ai_entertainment", "production_use", "likeness_deepfakes", "ethics_opinion"}),
        # "strikes deal" is no strike
        ("Lionsgate strikes deal with Runway on AI video model", "", "en",
         {"ai_entertainment", "deals_partnerships", "tools_products"}),
        # fiction about AI is not AI in production ...
        ("'The Creator' review: a sci-fi epic pits humanity against AI", "A child android "
         "in a war-torn future makes this film a spectacle.", "en", set()),
        ("Netflix presenta el tráiler de su serie sobre una IA", "Un thriller de ciencia "
         "ficción en un Madrid futurista.", "es", set()),
        # ... unless the story is about AI at work in the industry
        ("Robot drama used generative AI for its effects", "The film's VFX team says "
         "generative AI built the crowd scenes.", "en", {"ai_entertainment", "production_use"}),
        # AI outside the creative industries, and entertainment without AI
        ("IA in corsia: un algoritmo aiuta a diagnosticare i tumori", "Lo studio analizza "
         "le immagini con l'intelligenza artificiale.", "it", set()),
        ("Nvidia earnings beat as AI data centre demand soars", "", "en", set()),
        ("Premio ai registi esordienti ai Nastri d'Argento", "Il cinema italiano festeggia.",
         "it", set()),
        ("Ai Weiwei's film about refugees opens in Berlin", "", "en", set()),
    ],
)  # fmt: skip
def test_default_pack(title: str, summary: str, lang: str, expected: set[str]) -> None:
    assert topics_of(DEFAULT_PACK, title, summary, lang) == expected


def test_topics_referring_through_each_other_too_deep_are_refused() -> None:
    """Each query is bounded alone (50 levels), but 12 topics each nested 48 deep and
    referring to the next reached RecursionError, a traceback at reload."""

    def chain(n: int, nesting: int) -> RuleSet:
        def query(i: int) -> str:
            inner = f"#t{i + 1}" if i < n - 1 else "y"
            return "(x OR NOT zz " * nesting + inner + ")" * nesting

        return RuleSet(
            topics=tuple(TopicRule(f"t{i}", f"T{i}", ((ALL, query(i)),)) for i in range(n))
        )

    with pytest.raises(RuleError) as refused:
        compile_rules(chain(12, 48))
    assert refused.value.where == ("topics", "t0")
    assert str(refused.value) == (
        "topics.t0: refers through other topics (#t0 -> #t1 -> #t2) to queries nested more "
        "than 200 deep in all: fewer topics in the chain, or fewer parentheses"
    )
    # what a person writes: a few topics, each a few levels deep, all evaluated
    assert topics_of(chain(12, 3), "y") == {f"t{i}" for i in range(12)}


def test_topics_referring_to_one_topic_through_several_pass_up_its_hits_once() -> None:
    """a -> (b, c) -> a' ... 30 levels: each level doubled the hits passed up (2**30
    copies of one 'AI': minutes and gigabytes for one item); the check at load was fine."""
    topics = [TopicRule("top", "Top", ((ALL, "#a0"),))]
    for i in range(30):
        topics += [
            TopicRule(f"a{i}", "x", ((ALL, f"#b{i} OR #c{i}"),), hidden=True),
            TopicRule(f"b{i}", "x", ((ALL, f"#a{i + 1}"),), hidden=True),
            TopicRule(f"c{i}", "x", ((ALL, f"#a{i + 1} AND AI"),), hidden=True),
        ]
    topics.append(TopicRule("a30", "x", ((ALL, "AI"),), hidden=True))
    classifier = compile_rules(RuleSet(topics=tuple(topics)))
    done = threading.Event()
    got: list = []
    worker = threading.Thread(
        target=lambda: (got.append(classifier.classify(item("Studio signs AI deal"))), done.set()),
        daemon=True,
    )
    worker.start()
    assert done.wait(5), "classifying one item took more than 5 s"
    ((match,),) = got
    assert (match.topic, match.terms, match.score) == ("top", ("AI",), 2.0)


@pytest.mark.parametrize(
    "topics, message",
    [
        ((("ai", "AI OR #ai", None),), "topics.ai: refers to itself (#ai in its query)"),
        ((("ai", "AI", "ai"),), "topics.ai: refers to itself (requires: itself)"),
        ((("a", "#b", None), ("b", "x", "a")),
         "topics.a: topics refer to each other in a circle: a -> b -> a (b requires: a)"),
    ],
)  # fmt: skip
def test_a_circle_names_how_each_topic_refers_to_the_next(topics, message) -> None:
    rules = RuleSet(topics=tuple(TopicRule(t, t, ((ALL, q),), requires=r) for t, q, r in topics))
    with pytest.raises(RuleError) as refused:
        compile_rules(rules)
    assert str(refused.value) == message


def test_too_deep_through_a_topic_checked_before_names_the_whole_chain() -> None:
    """top -> l -> d and top -> r -> d: the chain through r was too deep below d, but
    the refusal named '#top -> #r -> #d', the topics that made it deep left out."""
    deep = "(x OR " * 45 + "{}" + ")" * 45
    topics = [("top", "#l OR #r"), ("l", "#d"), ("r", deep.format("#d")),
              ("d", deep.format("#e")), ("e", deep.format("#f")), ("f", deep.format("#g")),
              ("g", "(y OR " * 14 + "z" + ")" * 14)]  # fmt: skip
    with pytest.raises(RuleError) as refused:
        compile_rules(RuleSet(topics=tuple(TopicRule(t, t, ((ALL, q),)) for t, q in topics)))
    assert "(#top -> #r -> #d -> #e -> #f -> #g)" in str(refused.value)


@pytest.mark.parametrize(
    "text",
    [
        "Künstliche Intelligenz: “KI” im Kino – 5 € …",  # Latin-1 between characters beyond
        "l’IA à Cannes\nd'autore_x\tSAG-AFTRA",  # apostrophes, dashes, spaces fold to a space
        "Σίσυφος ΟΔΟΣ and Straße ẞ",  # Greek (Σ lower-cases two ways), ß kept
        "´ \u1ffd ° µ ÿ Þ \xa0 \xad",  # a character beyond Latin-1 folding into it (´)
        "".join(map(chr, range(0x20, 0x300))) + "\u2026",  # all of Latin-1 and then some
    ],
)
def test_fold_is_one_character_for_one_whatever_the_text(text: str) -> None:
    from monitor.classify.text import _CASED, _LOWER, fold

    lower, cased = fold(text)
    assert cased == text.translate(_CASED)  # character by character, as the table says
    assert len(lower) == len(cased) == len(text)
    if lower != text.translate(_LOWER):  # the table's lower case, or the text's own
        assert lower == cased.lower()
