from __future__ import annotations

import io
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from monitor.classify import keyword_rules
from monitor.errors import ParseError
from monitor.parse import ParseJob, parse_and_classify
from tests.conftest import FIXTURES, fixture

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def parse(body: bytes, language: str | None = None, topics=None, headers=None):
    job = ParseJob("f", "https://example.org/feed", body, headers or {}, language, NOW,
                   keyword_rules(topics or {}))  # fmt: skip
    return parse_and_classify(job)


def rss(items: str, channel: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T</title>'
        f"{channel}{items}</channel></rss>"
    ).encode()


@pytest.mark.parametrize(
    "name, items, language",
    [
        ("thr_rescraped_rss2.xml", 9, "en"),
        ("golem_de_iso8859_rss2.xml", 40, "de"),
        ("polygon_thq_stream_2014_atom.xml", 8, "en"),
        ("techcrunch_feedburner_2011_rss2.xml", 20, "en"),  # newline before <?xml: repaired
        ("ciak_it_rescraped_rss2.xml", 10, "en"),  # the channel says en, wrongly
    ],
)
def test_real_feeds_parse(name: str, items: int, language: str | None) -> None:
    parsed = parse(fixture(name))
    assert len(parsed.items) == items
    assert parsed.language == language
    for item in parsed.items:
        assert item.title and item.identity
        assert item.published.tzinfo is UTC
        assert item.url is None or item.url.startswith("http")


def test_configured_language_beats_the_feeds_claim() -> None:
    parsed = parse(fixture("ciak_it_rescraped_rss2.xml"), language="it")
    assert {i.language for i in parsed.items} == {"it"}


def test_latin1_feed_is_decoded() -> None:
    titles = " ".join(i.title for i in parse(fixture("golem_de_iso8859_rss2.xml")).items)
    assert "ü" in titles or "ä" in titles or "ö" in titles


def test_windows_1252_quotes_read_as_quotes_whatever_the_text_around_them() -> None:
    # a feed that says ISO-8859-1 but was typed in windows-1252 (0x93/0x94 are its curly
    # quotes); the first item is ASCII otherwise, the second not: both are mapped
    body = (
        b'<?xml version="1.0" encoding="iso-8859-1"?><rss version="2.0"><channel><title>T'
        b"</title><item><guid>1</guid><title>\x93Deal\x94 signed \x80 5m</title></item>"
        b"<item><guid>2</guid><title>Caf\xe9 \x93IA\x94 \x96 accord</title></item>"
        b"</channel></rss>"
    )
    assert [i.title for i in parse(body).items] == [
        "\u201cDeal\u201d signed \u20ac 5m",
        "Caf\u00e9 \u201cIA\u201d \u2013 accord",
    ]


def test_the_faster_windows_1252_table_maps_every_character_as_feedparsers_own() -> None:
    from feedparser.html import _cp1252 as feedparsers

    from monitor.parse import _feedparser, cp1252_as_string

    table = cp1252_as_string(feedparsers)
    text = "".join(map(chr, range(0x110000)))  # every code point, the first plane and past it
    assert text.translate(table) == text.translate(feedparsers)
    import feedparser.mixin

    _feedparser()  # what parsing uses
    assert feedparser.mixin._cp1252 == table


# content parameters in all their forms: escaped HTML, XHTML, base64, text, a src, and
# xml:base / xml:lang on the way; and a document the strict parser gives up on
_CONTENT_KINDS = [
    b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="fr" xml:base="https://a.example/">
<title type="html">Caf&amp;eacute; &lt;b&gt;IA&lt;/b&gt;</title><id>urn:f</id>
<entry xml:lang="de"><id>urn:1</id><title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">
<b>KI</b> und Film</div></title><link href="rel/1"/>
<summary type="text">Plain \x93quoted\x94 &lt;not html&gt;</summary>
<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Eins <a href="x">zwei</a></p>
</div></content></entry>
<entry><id>urn:2</id><title>Two</title>
<content type="text/plain" mode="base64">SGVsbG8sIHdvcmxk</content></entry>
<entry><id>urn:3</id><title>Three</title><content src="https://a.example/3" type="text/html"/>
</entry></feed>""",
    b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>
<title>R</title><description>&lt;p&gt;about&lt;/p&gt;</description>
<item><title>An &lt;i&gt;AI&lt;/i&gt; deal</title><description>&lt;p&gt;Runway &amp;amp;
Lionsgate&lt;/p&gt;</description><content:encoded><![CDATA[<p>Full <b>text</b></p>]]>
</content:encoded></item>
<item><title>Broken & unescaped <b>markup</title><description>left open</item>
</channel></rss>""",
    # C1 characters (which the windows-1252 table maps) as bytes of a Latin-1 document,
    # as UTF-8, as character references (the strict parser's and the loose one's), in
    # base64, and none in a text that is not ASCII
    b'<?xml version="1.0" encoding="iso-8859-1"?><rss version="2.0"><channel><title>a\x96b'
    b"</title><item><title>caf\xe9 \x93q\x94 \x80</title><description>x &#150; &#x97;"
    b" z\x85</description></item></channel></rss>",
    '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><item><title>'
    "caf\u00e9 \u0093q\u0094 &#150;</title><description>&lt;p&gt;\u00e9\u0096&lt;/p&gt; "
    "&amp;#150;</description><category>\u00e9t\u00e9 \u0080</category></item><item><title>"
    "d\u00e9j\u00e0 vu</title></item></channel></rss>".encode(),
    b'<rss version="2.0"><channel><item><title>&#150; &#x96; ascii &#0133</title>'
    b"<description>open <b>&#147;</description></item></channel></rss>",
    b'<feed xmlns="http://purl.org/atom/ns#" version="0.3"><entry><id>urn:c1</id>'
    b'<content type="text/plain" mode="base64">wpPDqcKU</content></entry></feed>',
]


def test_feedparser_made_faster_reads_every_document_as_feedparser_does() -> None:
    """The parsers as parsing uses them (a plain dict for the content parameters, the
    windows-1252 table as a string, applied only to text holding a C1 character) return
    the entries feedparser's own return, compared with feedparser in a fresh
    interpreter, on the real feeds and each kind of content."""
    import pickle

    from monitor.parse import _feedparser

    documents = [p.read_bytes() for p in sorted(FIXTURES.glob("*.xml"))] + _CONTENT_KINDS
    script = (
        "import io, pickle, sys, feedparser\n"
        "docs = pickle.load(sys.stdin.buffer)\n"
        "out = [feedparser.parse(io.BytesIO(d), sanitize_html=False,\n"
        "       resolve_relative_uris=False) for d in docs]\n"
        "sys.stdout.buffer.write(pickle.dumps([(d.bozo, d.version, d.feed, d.entries)\n"
        "                                      for d in out]))\n"
    )
    plain = subprocess.run(
        [sys.executable, "-c", script], input=pickle.dumps(documents), capture_output=True,
        check=True,
    ).stdout  # fmt: skip
    feedparser = _feedparser()
    assert feedparser.api.StrictFeedParser._plain_content_params  # what is compared
    assert feedparser.api.LooseFeedParser._plain_content_params
    assert feedparser.mixin._FeedParserMixin.pop._translates_c1_only
    ours = []
    for body in documents:
        d = feedparser.parse(io.BytesIO(body), sanitize_html=False, resolve_relative_uris=False)
        ours.append((d.bozo, d.version, d.feed, d.entries))
    # both through pickle: unpickling maps FeedParserDict keys through its aliases
    ours = pickle.loads(pickle.dumps(ours))
    expected = pickle.loads(plain)
    broken = len(documents) - len(_CONTENT_KINDS) + 1  # read by the loose parser too
    assert ours[broken][0] and len(ours) == len(expected) > 10
    for (path, got, want) in zip(
        [*sorted(FIXTURES.glob("*.xml")), *["kinds"] * len(_CONTENT_KINDS)], ours, expected,
        strict=True,
    ):  # fmt: skip
        assert typed(got) == typed(want), path


def typed(value: object) -> object:
    """value with each container's type: a FeedParserDict is equal to a dict with its items,
    but does not read as one (entry.title_detail.value)"""
    if isinstance(value, dict):
        return type(value).__name__, sorted((k, typed(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return type(value).__name__, [typed(v) for v in value]
    return value


@pytest.mark.parametrize(
    "item_xml, identity",
    [
        ("<item><guid>abc-1</guid><link>https://x.org/a</link><title>A</title></item>", "abc-1"),
        (
            "<item><link>https://x.org/a?utm_source=rss</link><title>A</title></item>",
            "https://x.org/a",
        ),
        (
            "<item><title>A</title><pubDate>Mon, 23 Nov 2026 08:00:00 GMT</pubDate></item>",
            "sha1:",
        ),
    ],
)
def test_identity_is_guid_else_link_else_hash(item_xml: str, identity: str) -> None:
    (item,) = parse(rss(item_xml)).items
    assert item.identity.startswith(identity)
    (again,) = parse(rss(item_xml)).items
    assert again.identity == item.identity  # stable across polls


def test_items_without_anything_to_show_are_dropped_and_duplicates_kept_once() -> None:
    body = rss(
        "<item></item>"
        "<item><guid>g</guid><title>first</title></item>"
        "<item><guid>g</guid><title>second</title></item>"
    )
    items = parse(body).items
    assert [i.title for i in items] == ["first"]


def test_absurd_dates_become_first_seen() -> None:
    body = rss(
        "<item><guid>a</guid><title>old</title>"
        "<pubDate>Mon, 01 Jan 1900 00:00:00 GMT</pubDate></item>"
        "<item><guid>b</guid><title>new</title>"
        "<pubDate>Fri, 31 Dec 9999 00:00:00 GMT</pubDate></item>"
        "<item><guid>c</guid><title>none</title></item>"
    )
    assert {i.published for i in parse(body).items} == {NOW}


def atom(base: str, link: str) -> bytes:
    return (
        f'<feed xmlns="http://www.w3.org/2005/Atom" {base}><title>t</title>'
        f'<entry><id>urn:1</id><title>A</title><link href="{link}"/></entry></feed>'
    ).encode()


@pytest.mark.parametrize(
    "body, headers, url",
    [
        (rss("<item><link>/news/1</link><title>A</title></item>"), {},
         "https://example.org/news/1"),
        # a redirected feed: its links are relative to where it was found
        (rss("<item><link>news/1</link><title>A</title></item>"),
         {"content-location": "https://cdn.example.net/feeds/rss.xml"},
         "https://cdn.example.net/feeds/news/1"),
        (rss("<item><link>https://other.example/a?b=1</link><title>A</title></item>"),
         {"content-location": "https://cdn.example.net/rss.xml"}, "https://other.example/a?b=1"),
        (atom('xml:base="https://blog.example.com/posts/"', "one"), {},
         "https://blog.example.com/posts/one"),
        (atom('xml:base="/blog/"', "one"), {}, "https://example.org/blog/one"),
        (atom("", "../one"), {"content-location": "https://example.org/a/b/feed"},
         "https://example.org/a/one"),
    ],
)  # fmt: skip
def test_relative_links_resolve_against_the_feed_url(body, headers, url) -> None:
    (item,) = parse(body, headers=headers).items
    assert item.url == url


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "empty response body"),
        (b"/etc/passwd", "not an RSS or Atom feed"),
        (b"https://example.org/feed", "not an RSS or Atom feed"),
        (b"<!doctype html><html><body>home</body></html>", "HTML page"),
        (b'{"version": "https://jsonfeed.org/version/1"}', "not an RSS or Atom feed"),
        (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;">]>'
            b"<rss><channel><title>&lol2;</title></channel></rss>",
            "declares XML entities",
        ),
        (  # external entity (XXE)
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<rss><channel><title>&x;</title></channel></rss>",
            "declares XML entities",
        ),
        (  # the same in UTF-16
            '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE r [<!ENTITY x "y">]><rss/>'.encode(
                "utf-16"
            ),
            "declares XML entities",
        ),
    ],
)
def test_refused_documents(body: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message) as caught:
        parse(body)
    assert "feed 'f' (https://example.org/feed)" in str(caught.value)


def test_control_and_bidi_characters_are_stripped_from_titles() -> None:
    (item,) = parse(rss("<item><guid>x</guid><title>A\u202eB&#x7;C</title></item>")).items
    assert item.title == "AB C"


def test_classification_runs_with_the_parse() -> None:
    parsed = parse(
        fixture("arstechnica_2024-04-01_rss2.xml"),
        topics={"ai": ["Sora", "artificial intelligence"]},
    )
    sora = next(i for i in parsed.items if "Sora" in i.title)
    (match,) = parsed.matches[sora.identity]
    assert match.topic == "ai" and "Sora" in match.terms and match.score >= 2


def test_entries_stored_already_are_left_out_and_the_rest_classified() -> None:
    body = fixture("thr_rescraped_rss2.xml")
    everything = parse(body, topics={"ai": ["AI", "Hollywood"]})
    known = frozenset(i.identity for i in everything.items[1:])
    job = ParseJob("f", "https://example.org/feed", body, {}, None, NOW,
                   keyword_rules({"ai": ["AI", "Hollywood"]}), None, known)  # fmt: skip
    fresh = parse_and_classify(job)
    assert fresh.items == everything.items[:1]
    assert set(fresh.matches) <= {everything.items[0].identity}


def test_a_parse_worker_loads_no_storage_network_or_config_code() -> None:
    # workers start from the forkserver's preloaded monitor.parse: whatever it imports,
    # every worker pays for in start-up time and memory
    code = (
        "import sys, monitor.parse, monitor.pipeline as p; "
        "assert p.make_parse_pool.__module__ == 'monitor.pipeline'; "
        "assert p.init_parse_worker.__module__ == 'monitor.parse'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    code = (
        "import sys, monitor.parse; "
        "heavy = {m.split('.')[0] for m in sys.modules} & "
        "{'sqlalchemy', 'sqlmodel', 'httpx', 'pydantic', 'storage', 'alerts'}; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
