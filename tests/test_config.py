"""feeds.yaml is validated whole, and every refusal points at the text to fix."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.config import load_config, parse_config
from monitor.errors import ConfigError

GOOD = """\
defaults:
  interval: 10m
feeds:
  - name: thr
    url: https://www.hollywoodreporter.com/feed/
  - name: thr-roma
    url: https://www.hollywoodreporter.it/feed/
    language: it
    interval: 1h
topics:
  ai: {label: AI, query: [AI, intelligenza artificiale]}
"""


def refusal(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "feeds.yaml")
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    "text, expected",
    [
        (  # wrong duration, pointing at the value
            GOOD.replace("interval: 1h", "interval: 15 minutes"),
            "feeds.yaml:9:15: feeds[1].interval: '15 minutes' is not a duration like 15m or 1h",
        ),
        (  # below the minimum
            GOOD.replace("interval: 1h", "interval: 30s"),
            "feeds.yaml:9:15: feeds[1].interval: must be at least 1m",
        ),
        (  # a digest for no one: it would be rendered every week and sent nowhere
            GOOD + "digests:\n  weekly:\n    to: []\n",
            "feeds.yaml:14:9: digests.weekly.to: lists no one: add the addresses it goes to, "
            "like to: [news@example.org]",
        ),
        (  # unknown key, pointing at the key
            GOOD.replace("    language: it\n", "    langauge: it\n"),
            "feeds.yaml:8:5: feeds[1].langauge: unknown key 'langauge'",
        ),
        (  # not http(s)
            GOOD.replace("https://www.hollywoodreporter.it/feed/", "ftp://example.org/feed"),
            "feeds.yaml:7:10: feeds[1].url: 'ftp://example.org/feed' is not an http:// or "
            "https:// URL",
        ),
        (  # duplicate name
            GOOD.replace("name: thr-roma", "name: thr"),
            "feeds.yaml:6:11: feeds[1].name: duplicate feed name 'thr' (also feeds[0])",
        ),
        (  # duplicate URL, even with tracking parameters
            GOOD.replace(
                "https://www.hollywoodreporter.it/feed/",
                "https://WWW.hollywoodreporter.com/feed/?utm_source=x",
            ),
            "feeds.yaml:7:10: feeds[1].url: duplicate feed URL "
            "'https://WWW.hollywoodreporter.com/feed/?utm_source=x' (also feeds[0])",
        ),
        (  # wrong type
            GOOD.replace("interval: 1h", "interval: 1h\n    enabled: sometimes"),
            "feeds.yaml:10:14: feeds[1].enabled: input should be a valid boolean, "
            "unable to interpret input (got 'sometimes')",
        ),
        (  # missing key, pointing at the entry
            GOOD.replace("  - name: thr\n    url", "  - url"),
            "feeds.yaml:4:5: feeds[0].name: missing required key 'name'",
        ),
        (  # bad language code
            GOOD.replace("language: it", "language: italian"),
            "feeds.yaml:8:15: feeds[1].language: 'italian' is not an ISO 639-1 language code "
            "like en or it",
        ),
        (  # YAML syntax
            GOOD.replace("query: [AI, intelligenza artificiale]}", "query: [AI}"),
            "feeds.yaml:11:",
        ),
        (  # duplicate key
            GOOD.replace(
                "defaults:\n  interval: 10m", "defaults:\n  interval: 10m\n  interval: 5m"
            ),
            "feeds.yaml:3:3: duplicate key 'interval': the mapping that starts on line 2 has "
            "it already",
        ),
        (  # unknown top-level section
            GOOD + "sources: []\n",
            "feeds.yaml:12:1: sources: unknown key 'sources'",
        ),
        (
            GOOD.replace("query: [AI, intelligenza artificiale]", "query: 42"),
            "feeds.yaml:11:26: topics.ai.query: must be a query, or a list of keywords and phrases",
        ),
        (  # a control character pasted in: YAML refuses it; the line is named, no traceback
            GOOD.replace("label: AI,", "label: A\x00I,"),
            "feeds.yaml:11:16: the control character U+0000 is not allowed: delete it",
        ),
        (  # nothing but comments: the service would stop monitoring without a word
            "# feeds:\n#   - name: thr\n",
            "feeds.yaml:1:1: the file is empty: it needs feeds: and topics:",
        ),
        (  # a channel written bare is a comment to YAML: default_channel would be empty
            GOOD + "slack:\n  default_channel: #ai-news\n",
            "feeds.yaml:13:3: slack.default_channel: is empty: YAML reads '#ai-news' as a "
            'comment; write it in quotes: default_channel: "#ai-news"',
        ),
        (  # an empty value is named at its key, not at the next key's line
            GOOD.replace("  ai: {label", "  zebra:\n  ai: {label"),
            "feeds.yaml:11:3: topics.zebra: is empty: give it a value",
        ),
        (  # every feed commented out
            GOOD.replace("feeds:\n", "feeds:\n#")
            .replace("\n  - name: thr-roma", "\n#  - name: thr-roma")
            .replace("\n    url", "\n#    url")
            .replace("\n    lang", "\n#    lang")
            .replace("\n    interval: 1h", "\n#    interval: 1h"),
            "feeds.yaml:3:1: feeds: is empty: give it a value",
        ),
        (  # a name with a space: said in words, not as a regular expression
            GOOD.replace("name: thr-roma", "name: THR Roma"),
            "feeds.yaml:6:11: feeds[1].name: names are letters, digits and - _ . (no spaces; "
            "up to 64 characters, starting with a letter or digit) (got 'THR Roma')",
        ),
        (  # a bare URL where a feed's keys go
            GOOD.replace(
                "  - name: thr\n    url: https://www.hollywoodreporter.com/feed/",
                "  - https://www.hollywoodreporter.com/feed/",
            ),
            "feeds.yaml:4:5: feeds[0]: must be keys with values, one per line (name: value), "
            "not 'https://www.hollywoodreporter.com/feed/'",
        ),
        (  # a country's code for a language
            GOOD.replace("language: it", "language: jp"),
            "feeds.yaml:8:15: feeds[1].language: 'jp' is not an ISO 639-1 language code like "
            "en or it (ja?)",
        ),
        (  # a route to a building block: it never fires
            GOOD.replace("  ai: {label: AI,", "  ai: {hidden: true, label: AI,")
            + "  use: {label: Use, query: '#ai'}\n"
            + "slack:\n  routes:\n    - {topics: [ai], channel: '#ai'}\n",
            "feeds.yaml:15:17: slack.routes[0].topics[0]: topic 'ai' is hidden (a building "
            "block other topics use as #ai) and is never given to an item",
        ),
        (  # a duplicate section is named, not quoted whole
            GOOD + "topics:\n  b: {label: B, query: B}\n",
            "feeds.yaml:12:1: duplicate key 'topics': the mapping that starts on line 1 has "
            "it already",
        ),
    ],
)
def test_broken_file_names_file_line_column_and_key(text: str, expected: str) -> None:
    problems = refusal(text)
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(
    "topics, expected",
    [
        (  # a quoted query: the column points at the problem inside it
            '  ai: {label: AI, query: "AI AND (film OR"}',
            "feeds.yaml:11:42: topics.ai.query: the query ends where a term was expected",
        ),
        (
            "  ai:\n    label: AI\n    query: AI NEAR/x film",
            "feeds.yaml:13:15: topics.ai.query: NEAR needs a distance in words, like NEAR/10",
        ),
        (
            "  ai:\n    label: AI\n    query:\n      all: AI\n"
            "      it: '\"intelligenza artificiale'",
            'feeds.yaml:15:12: topics.ai.query.it: a quote (") is not closed',
        ),
        (
            '  ai: {label: AI, query: "@studios AND AI"}',
            "feeds.yaml:11:26: topics.ai.query: unknown watchlist @studios",
        ),
        (
            '  ai: {label: AI, query: "#a"}\n  a: {label: A, query: "#ai"}',
            "feeds.yaml:11:7: topics.ai: topics refer to each other in a circle: ai -> a -> ai",
        ),
        (
            "  ai: {label: AI, query: AI, requires: gate}",
            "feeds.yaml:11:40: topics.ai.requires: unknown topic 'gate'",
        ),
        (
            "  ai: {label: AI, query: {en: AI, italian: IA}}",
            "feeds.yaml:11:26: topics.ai.query: 'italian' is not all or an ISO 639-1",
        ),
        (  # the slips that would make a topic never (or always) match, said
            '  ai: {label: AI, query: "AI and film"}',
            "feeds.yaml:11:30: topics.ai.query: 'and' in lower case is a word to look for: "
            'write AND for the operator, or "and" in quotes for the word',
        ),
        (
            '  ai: {label: AI, query: "AI film not robot"}',
            "feeds.yaml:11:35: topics.ai.query: 'not' in lower case",
        ),
        (
            '  ai: {label: AI, query: "AI|KI film"}',
            "feeds.yaml:11:27: topics.ai.query: 'AI|KI' looks like a regular expression: "
            "queries use OR for alternatives and a * at the end of a word",
        ),
        (
            '  ai: {label: AI, query: "deepfake.* AND film"}',
            "feeds.yaml:11:27: topics.ai.query: 'deepfake.*' looks like a regular expression",
        ),
        (
            '  ai: {label: AI, query: "AI, film, cinema"}',
            "feeds.yaml:11:27: topics.ai.query: a comma is not an operator: separate "
            "alternatives with OR",
        ),
        (
            '  ai: {label: AI, query: "AI near/5 film"}',
            "feeds.yaml:11:30: topics.ai.query: NEAR is written in capitals, like NEAR/10",
        ),
        (
            '  ai: {label: AI, query: "AI NEAR/0 film"}',
            "feeds.yaml:11:30: topics.ai.query: NEAR needs a distance of 1 word or more",
        ),
        (
            '  ai: {label: AI, query: "title: (AI OR KI)"}',
            "feeds.yaml:11:27: topics.ai.query: no space goes after 'title:': write "
            "title:(AI OR KI) or title:AI",
        ),
        (
            '  ai: {label: AI, query: "' + "(" * 60 + "AI" + ")" * 60 + '"}',
            "feeds.yaml:11:77: topics.ai.query: nested more than 50 deep",
        ),
        (
            '  ai: {label: AI, query: "' + "NOT " * 60 + 'x"}',
            "feeds.yaml:11:227: topics.ai.query: nested more than 50 deep",
        ),
        (
            '  ai: {label: AI, query: "' + "a NEAR/2 " * 60 + 'b"}',
            "feeds.yaml:11:479: topics.ai.query: nested more than 50 deep",
        ),
        (  # chains inside chains, each under 50: 1,000 deep (RecursionError, a traceback)
            '  ai: {label: AI, query: "'
            + "(" * 30
            + "a"
            + "".join(")" + " NEAR/2 b" * (20 + i) for i in range(30))
            + '"}',
            "feeds.yaml:11:259: topics.ai.query: nested more than 50 deep",
        ),
    ],
)
def test_bad_queries_are_refused_with_their_position(topics: str, expected: str) -> None:
    text = GOOD.replace("  ai: {label: AI, query: [AI, intelligenza artificiale]}", topics)
    problems = refusal(text)
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(
    "slack",
    [
        "slack:\n  default_channel: xoxb-1234567890-abcdefSECRET\n",
        "slack: https://hooks.slack.com/services/T000/B000/abcdefSECRET\n",
        "slack:\n  bot_token: xoxb-1234567890-abcdefSECRET\n",
        "slack:\n  default_channel: xoxe.xoxb-1-MS0yLTIxSECRET\n",  # a rotating token
        "slack:\n  default_channel: xoxe-1-My0xLTIxSECRET\n",  # its refresh token
        "slack:\n  default_channel: '#ai'\n  webhook: https://hooks.slack.com/services/SECRET\n",
    ],
)
def test_a_secret_pasted_in_the_file_is_refused_and_never_repeated(slack: str) -> None:
    problems = refusal(GOOD + slack)
    assert problems and not any("SECRET" in p for p in problems), problems
    assert any(
        "looks like a Slack token or webhook URL: secrets do not belong in feeds.yaml" in p
        and "REELWATCH_SLACK_BOT_TOKEN" in p
        for p in problems
    ), problems


def test_merge_keys_are_read_and_their_mistakes_named() -> None:
    """An anchor and a merge key (<<: *base) are YAML a user may write: the careful
    reading (taken for an empty value) must not stumble on the merged keys."""
    text = (
        "feeds:\n"
        "  - &base {name: thr, url: https://www.hollywoodreporter.com/feed/, tags: [trade]}\n"
        "  - <<: *base\n"
        "    name: thr2\n"
        "    url: https://www.hollywoodreporter.com/feed2/\n"
        "    language:\n"
        "topics:\n"
        "  ai: {label: AI, query: AI}\n"
    )
    assert parse_config(text).feed("thr2").tags == ["trade"]
    assert refusal(text.replace("    language:\n", "    interval: 15x\n")) == [
        "feeds.yaml:6:15: feeds[1].interval: '15x' is not a duration like 15m or 1h"
    ]


def test_a_word_that_only_looks_like_a_token_is_not_one() -> None:
    config = parse_config(
        GOOD.replace("hollywoodreporter.com/feed/", "tvline.com/tag/xoxo-gossip/")
    )
    assert config.feeds[0].url.endswith("xoxo-gossip/")


def test_a_feed_urls_password_is_in_no_refusal() -> None:
    login = "https://reader:hunter2@www.hollywoodreporter.it/feed/"
    problems = refusal(GOOD.replace("https://www.hollywoodreporter.com/feed/", login)
                       .replace("https://www.hollywoodreporter.it/feed/", login, 2))  # fmt: skip
    assert problems and all("hunter2" not in p for p in problems), problems
    assert any("duplicate feed URL 'https://reader:***@www" in p for p in problems), problems


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_bytes(GOOD.replace("label: AI", "label: Caf\u00e9").encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}:11:18: byte 0xe9 is not UTF-8: save the file as UTF-8 (an editor's encoding "
        "setting)"
    )


def test_every_problem_is_reported_at_once() -> None:
    text = GOOD.replace("interval: 1h", "interval: soon").replace("language: it", "language: x")
    assert len(refusal(text)) == 2


def test_defaults_apply_to_feeds_that_do_not_say() -> None:
    config = parse_config(GOOD)
    thr, roma = config.feeds
    assert config.interval(thr) == timedelta(minutes=10)
    assert config.interval(roma) == timedelta(hours=1)
    assert config.timeout(thr) == timedelta(seconds=30)
    assert roma.language == "it" and thr.language is None
    assert config.topics["ai"].query == {"all": '"AI" OR "intelligenza artificiale"'}


def test_a_string_is_a_query_for_every_language() -> None:
    config = parse_config(GOOD.replace("[AI, intelligenza artificiale]", '"generative AI"'))
    assert config.topics["ai"].query == {"all": "generative AI"}


def test_feeds_check_exits_2_and_prints_the_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(GOOD.replace("interval: 1h", "interval: 15 minutes"))
    assert main(["feeds", "check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:9:15: feeds[1].interval: '15 minutes' is not a duration" in err


def test_feeds_check_on_a_missing_file_says_how_to_point_at_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["feeds", "check", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


SHIPPED = Path(__file__).parent.parent / "feeds.yaml"


def test_shipped_feeds_yaml_is_valid_and_covers_the_outlets_users_expect() -> None:
    config = load_config(SHIPPED)
    assert 15 <= len(config.feeds) <= 25
    names = {f.name for f in config.feeds}
    assert {"thr", "thr-roma", "variety", "deadline", "indiewire", "screendaily", "cineuropa",
            "billboard", "mbw", "theverge", "techcrunch"} <= names  # fmt: skip
    assert names & {"gamesindustry", "polygon"}
    assert {f.language for f in config.feeds} >= {"en", "it", "es", "fr", "de"}
    assert config.topics


@pytest.mark.parametrize(
    "text",
    [
        (Path(__file__).parent.parent / "feeds.yaml").read_text(encoding="utf-8"),
        # YAML 1.2 reading: yes, on and NO stay words, 1:30 is no number
        "feeds:\n  - name: yes\n    url: https://a.example/rss\n    tags: [on, NO, 1:30]\n",
    ],
)
def test_a_valid_file_reads_the_same_by_the_fast_and_the_careful_loader(text: str) -> None:
    assert parse_config(text) == parse_config(text, fast=False)


def test_a_digest_listing_an_address_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(GOOD + "digests:\n  weekly:\n    to: [team@example.org, Team@Example.org]\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert "digests.weekly.to: lists 'team@example.org' twice (as 'Team@Example.org')" in str(
        refused.value
    )
