from __future__ import annotations

from datetime import UTC, datetime

import pytest

from monitor.normalize import (
    canonical_url,
    clean_text,
    language_code,
    plausible_published,
    shown_url,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "url, canonical",
    [
        ("https://Variety.COM/2026/film/news/x/", "https://variety.com/2026/film/news/x/"),
        ("https://variety.com/x/?utm_source=rss&utm_medium=feed", "https://variety.com/x/"),
        (
            "https://variety.com/x/?id=7&fbclid=abc&gclid=def#comments",
            "https://variety.com/x/?id=7",
        ),
        ("http://example.org:80/a", "http://example.org/a"),
        ("https://example.org:8443/a", "https://example.org:8443/a"),
        ("https://example.org", "https://example.org/"),
        ("  https://example.org/a b  ", "https://example.org/a b"),
        ("javascript:alert(1)", None),
        ("file:///etc/passwd", None),
        ("", None),
        (None, None),
        ("https://[::1", None),
    ],
)
def test_canonical_url(url: str | None, canonical: str | None) -> None:
    assert canonical_url(url) == canonical


# What the quick path takes (plain links) and what it must leave to urllib, each given
# back as urllib's own reading gives it
_LINKS = [
    "https://variety.com/2026/film/news/x/",
    "https://variety.com",
    "https://variety.com?id=7",
    "https://arstechnica.com/?p=2013795&rw=f00001-29",
    "https://a.example/x?a=&b=2",
    "https://a.example/x?a",  # a name without '=': urllib writes it back as a=
    "https://a.example/x?",
    "https://a.example/x?a=1&&b=2",
    "https://a.example/x?q=a+b&r=%20",
    "https://a.example/x?UTM_Source=rss&id=1",
    "https://a.example/x?Fbclid=1",
    "https://a.example/x#top",
    "https://a.example./x",
    "https://a.example:443/x",
    "https://user@a.example/x",
    "https://A.example/x",
    "HTTPS://a.example/x",
    "https://a.example/caf\u00e9",
    "https://a.example/a\tb\nc",
    "https://a.example/a\u202eb",
    'https://a.example/\\x/"quoted"/~tilde/@at/[b]',
    "https://127.0.0.1/feed",
    "https://a.example//double",
    "ftp://a.example/x",
    "https:/a.example/x",
]


@pytest.mark.parametrize("url", _LINKS)
def test_canonical_url_quick_path_reads_links_as_urllib_does(url: str) -> None:
    from monitor.normalize import _canonical_url

    assert canonical_url(url) == _canonical_url(url)


@pytest.mark.parametrize(
    "raw, text",
    [
        ("<p>Lionsgate <b>signs</b> with Runway</p>", "Lionsgate signs with Runway"),
        ("Q&amp;amp;A with the director", "Q&A with the director"),  # double-escaped
        ("Bath &amp;amp;amp;amp; Body", "Bath & Body"),  # quadruple-escaped
        ("Caf&eacute; society", "Café society"),
        ("&lt;b&gt;Google&lt;/b&gt; alert", "Google alert"),  # escaped markup
        ("line\none\t\ttwo", "line one two"),
        ("nul\x00byte and \x07bell", "nul byte and bell"),
        ("evil\u202egnp.exe", "evilgnp.exe"),  # bidi override removed
        ("zero\u200bwidth", "zerowidth"),
        ("<script>alert(1)</script>Title", "Title"),
        ("", ""),
        (None, ""),
    ],
)
def test_clean_text(raw: str | None, text: str) -> None:
    assert clean_text(raw, 500) == text


def test_clean_text_caps_length_at_a_word() -> None:
    out = clean_text("word " * 1000, 100)
    assert len(out) <= 100 and out.endswith("…") and "wor…" not in out


def test_huge_title_costs_no_more_than_its_cap() -> None:
    out = clean_text("<b>x</b>" * 1_000_000, 500)
    assert len(out) <= 500


@pytest.mark.parametrize(
    "candidate, expected",
    [
        (datetime(2026, 11, 24, 8, 0, tzinfo=UTC), datetime(2026, 11, 24, 8, 0, tzinfo=UTC)),
        (datetime(2026, 11, 24, 8, 0), datetime(2026, 11, 24, 8, 0, tzinfo=UTC)),  # naive = UTC
        (datetime(1900, 1, 1, tzinfo=UTC), NOW),
        (datetime(9999, 12, 31, tzinfo=UTC), NOW),
        (datetime(2026, 11, 27, tzinfo=UTC), NOW),  # two days ahead
        (None, NOW),
    ],
)
def test_plausible_published(candidate: datetime | None, expected: datetime) -> None:
    assert plausible_published(candidate, NOW) == expected


@pytest.mark.parametrize(
    "tag, code",
    [
        ("en-US", "en"),
        ("IT-it", "it"),
        ("pt_BR", "pt"),
        ("de", "de"),
        ("", None),
        ("english", None),
        ("jp", None),  # two letters, but no language's: Japanese is ja
        ("xx", None),
        ("iw", "he"),  # the code Hebrew had before 1989, still in some feeds
    ],
)
def test_language_code(tag: str, code: str | None) -> None:
    assert language_code(tag) == code


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://reader:s3cret@intranet.example/feed", "https://reader:***@intranet.example/feed"),
        ("https://reader@intranet.example/feed", "https://reader@intranet.example/feed"),
        ("https://variety.com/feed/", "https://variety.com/feed/"),
        ("http://u:p@[::1]:8443/f?x=1", "http://u:***@[::1]:8443/f?x=1"),
        ("http://[bad", "http://[bad"),  # not parsed: shown as written
    ],
)
def test_shown_url_hides_a_password(url: str, shown: str) -> None:
    assert shown_url(url) == shown
