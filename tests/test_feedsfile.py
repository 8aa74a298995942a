"""feeds add / remove: discovery, names, and edits that leave the rest of feeds.yaml alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from monitor import USER_AGENT
from monitor.cli import main
from monitor.config import load_config, parse_config
from monitor.discover import common_feed_urls, feed_links, looks_like_html
from monitor.errors import ConfigError
from monitor.feedsfile import (
    FeedsFileError,
    add_entries,
    derive_name,
    remove_entry,
    render_entry,
    same_feed_key,
    slugify,
    unique_name,
    write_feeds_file,
)
from tests.conftest import fixture
from tests.servers import FeedServer

SHIPPED = Path(__file__).parent.parent / "feeds.yaml"
VARIETY = fixture("variety_rescraped_rss2.xml")


# -- pure parts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "title, slug",
    [
        ("Variety", "variety"),
        ("Variety - Article Feed", "variety-article-feed"),
        ("The Hollywood Reporter — Roma", "the-hollywood-reporter-roma"),
        ("Cinéma & Télévision", "cinema-television"),
        (
            "Fotogramas: Noticias de Cine, Series y Estrellas",
            "fotogramas-noticias-de-cine-series-y",
        ),
        ("  --GamesIndustry.biz--  ", "gamesindustry-biz"),
        ("映画ニュース", ""),  # nothing ascii is left: the caller falls back
        ("", ""),
        ("a" * 60, "a" * 40),
    ],
)
def test_slugify(title: str, slug: str) -> None:
    assert slugify(title) == slug


@pytest.mark.parametrize(
    "title, fallback, taken, name",
    [
        ("Variety", "variety.com", [], "variety"),
        ("Variety", "variety.com", ["variety"], "variety-2"),
        ("Variety", "variety.com", ["Variety", "variety-2"], "variety-3"),
        ("thr-roma", "x", [], "thr-roma"),  # already a name: kept as it is
        ("rollingstone_it.v2", "x", [], "rollingstone_it.v2"),
        ("THR", "x", [], "thr"),  # names are lower case
        ("映画ニュース", "eiga.com", [], "eiga-com"),  # from the site when the title has no ascii
        (None, "www.example.org", [], "www-example-org"),
        ("", "", [], "feed"),
    ],
)
def test_derive_name(title: str | None, fallback: str, taken: list[str], name: str) -> None:
    assert derive_name(title, fallback, taken) == name


def test_unique_name_stays_within_the_name_length() -> None:
    base = "a" * 40
    assert unique_name(base, [base]) == "a" * 38 + "-2"


@pytest.mark.parametrize(
    "a, b, same",
    [
        ("https://variety.com/feed/", "http://variety.com/feed", True),
        ("https://www.cartoonbrew.com/feed", "https://cartoonbrew.com/feed/", True),
        ("https://Deadline.com/feed/?utm_source=x", "https://deadline.com/feed/", True),
        ("https://deadline.com/feed/", "https://deadline.com/feed/#top", True),
        (
            "https://www.theverge.com/rss/index.xml",
            "https://www.theverge.com/rss/ai/index.xml",
            False,
        ),
        ("https://example.com/feed?cat=1", "https://example.com/feed?cat=2", False),
        ("https://hollywoodreporter.com/feed/", "https://hollywoodreporter.it/feed/", False),
    ],
)
def test_same_feed_key(a: str, b: str, same: bool) -> None:
    assert (same_feed_key(a) == same_feed_key(b)) is same


PAGE = "https://variety.com/v/film/"


@pytest.mark.parametrize(
    "html, links",
    [
        (  # WordPress: the site feed, then the comments feed, in page order
            '<html><head><link rel="alternate" type="application/rss+xml" title="Variety &raquo; '
            'Feed" href="https://variety.com/feed/" />\n<link rel="alternate" '
            'type="application/rss+xml" href="https://variety.com/comments/feed/" /></head></html>',
            ["https://variety.com/feed/", "https://variety.com/comments/feed/"],
        ),
        (  # Atom, relative href, attribute case and order, type parameters
            "<HTML><HEAD><LINK HREF='/atom.xml' TYPE='Application/Atom+XML; charset=utf-8' "
            "REL='Alternate'></HEAD>",
            ["https://variety.com/atom.xml"],
        ),
        (  # <base href> moves relative links
            '<head><base href="https://cdn.example.org/site/"><link rel="alternate" '
            'type="application/rss+xml" href="feed.xml"></head>',
            ["https://cdn.example.org/site/feed.xml"],
        ),
        (  # several rel tokens; the same feed twice
            '<link rel="alternate feed" type="application/rss+xml" href="/rss">'
            '<link rel="alternate" type="application/rss+xml" href="https://variety.com/rss">',
            ["https://variety.com/rss"],
        ),
        (  # not feeds: stylesheets, translations, JSON Feed, a feed inside a comment
            '<link rel="stylesheet" href="/a.css"><link rel="alternate" hreflang="it" '
            'href="/it/"><link rel="alternate" type="application/feed+json" href="/f.json">'
            '<!-- <link rel="alternate" type="application/rss+xml" href="/old.rss"> -->',
            [],
        ),
        (  # only http(s)
            '<link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">'
            '<link rel="alternate" type="application/rss+xml" href="feed://variety.com/feed/">',
            [],
        ),
        ("<html><head><title>No feed", []),
        ("", []),
    ],
)
def test_feed_links_from_a_page(html: str, links: list[str]) -> None:
    assert feed_links(html.encode(), PAGE) == links


def test_feed_links_reads_a_latin1_page() -> None:
    page = '<title>Cin\xe9ma</title><link rel="alternate" type="application/rss+xml" href="/f">'
    assert feed_links(page.encode("latin-1"), PAGE) == ["https://variety.com/f"]


def test_common_feed_urls_are_on_the_pages_host() -> None:
    urls = common_feed_urls("https://www.example.org:8443/news/today?x=1")
    assert urls[:5] == [
        "https://www.example.org:8443/feed/",
        "https://www.example.org:8443/rss",
        "https://www.example.org:8443/feed",
        "https://www.example.org:8443/rss.xml",
        "https://www.example.org:8443/atom.xml",
    ]


@pytest.mark.parametrize(
    "body, content_type, html",
    [
        (b"<!DOCTYPE html><html>", "text/html", True),
        (b"\n  <!-- generated --> <html lang=en>", None, True),
        (b'<?xml version="1.0"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0//EN">', None, True),
        (VARIETY, "application/rss+xml", False),
        (VARIETY, "text/html; charset=utf-8", False),  # a feed served as text/html
        (b"\xef\xbb\xbf<feed xmlns='http://www.w3.org/2005/Atom'>", "text/html", False),
        (b"hello", "text/html", True),
        (b"hello", "text/plain", False),
    ],
)
def test_looks_like_html(body: bytes, content_type: str | None, html: bool) -> None:
    assert looks_like_html(body, content_type) is html


@pytest.mark.parametrize(
    "entry, text",
    [
        (
            {"name": "variety", "url": "https://variety.com/feed/"},
            "  - name: variety\n    url: https://variety.com/feed/\n",
        ),
        (
            {
                "name": "a",
                "url": "https://x.org/?q=a: b #c",
                "language": "fr",
                "tags": ["Cinéma", "a,b"],
                "interval": "30m",
            },
            "  - name: a\n    url: 'https://x.org/?q=a: b #c'\n    language: fr\n"
            "    tags: [Cinéma, 'a,b']\n    interval: 30m\n",
        ),
        (
            {"name": "a", "url": "http://x/", "language": None, "tags": []},
            "  - name: a\n    url: http://x/\n",
        ),
    ],
)
def test_render_entry(entry: dict, text: str) -> None:
    assert render_entry(entry) == text


NEW = {"name": "new", "url": "https://example.org/feed/"}
NEW_LINES = "  - name: new\n    url: https://example.org/feed/\n"


@pytest.mark.parametrize(
    "before, after",
    [
        ("", "feeds:\n" + NEW_LINES),
        ("# my feeds\n", "# my feeds\nfeeds:\n" + NEW_LINES),
        ("defaults: {interval: 10m}", "defaults: {interval: 10m}\nfeeds:\n" + NEW_LINES),
        ("feeds:\ntopics: {}\n", "feeds:\n" + NEW_LINES + "topics: {}\n"),
        ("feeds: []  # none yet\n", "feeds:  # none yet\n" + NEW_LINES),
        ("feeds: ~\n", "feeds:\n" + NEW_LINES),
        (  # after the last entry, before the comments that introduce the next section
            "feeds:\n  - name: a  # first\n    url: http://a/\n\n# Topics\ntopics: {}\n",
            "feeds:\n  - name: a  # first\n    url: http://a/\n"
            + NEW_LINES
            + "\n# Topics\ntopics: {}\n",
        ),
        (  # an empty value last
            "feeds:\n  - name: a\n    url: http://a/\n    interval:\n\ntopics: {}\n",
            "feeds:\n  - name: a\n    url: http://a/\n    interval:\n"
            + NEW_LINES
            + "\ntopics: {}\n",
        ),
        (  # the file's own indentation and line endings
            "\ufefffeeds:\r\n-   name: a\r\n    url: http://a/",
            "\ufefffeeds:\r\n-   name: a\r\n    url: http://a/\r\n-   name: new\r\n"
            "    url: https://example.org/feed/\r\n",
        ),
        (  # a block list, then a block scalar last: the entry goes after its text
            "feeds:\n  - name: a\n    tags:\n      - x\n    url: >-\n      http://a/\n"
            "\ntopics: {}\n",
            "feeds:\n  - name: a\n    tags:\n      - x\n    url: >-\n      http://a/\n"
            + NEW_LINES
            + "\ntopics: {}\n",
        ),
    ],
)
def test_add_entries(before: str, after: str) -> None:
    assert add_entries(before, [NEW]) == after
    parse_config(after)


@pytest.mark.parametrize(
    "before, name, after",
    [
        (
            "feeds:\n  - name: a\n    url: http://a/\n  # b is ours\n  - name: b  # yes\n"
            "    url: http://b/\n    # its tags\n    tags: [x]\n\n  # c\n  - name: c\n    url: http://c/\n",
            "b",
            "feeds:\n  - name: a\n    url: http://a/\n  # b is ours\n\n  # c\n"
            "  - name: c\n    url: http://c/\n",
        ),
        (  # the last one: the comment after it stays for what follows
            "feeds:\n  - name: a\n    url: http://a/\n  - name: b\n    url: http://b/\n"
            "    description: |\n      B\n\n# Topics\ntopics: {}\n",
            "b",
            "feeds:\n  - name: a\n    url: http://a/\n\n# Topics\ntopics: {}\n",
        ),
        (  # an empty value last
            "feeds:\n  - name: a\n    url: http://a/\n    interval:\n\n  # b\n  - name: b\n"
            "    url: http://b/\n",
            "a",
            "feeds:\n\n  # b\n  - name: b\n    url: http://b/\n",
        ),
        (  # the only one: an empty list must stay a list
            "feeds:  # mine\n  - name: a\n    url: http://a/\ntopics: {}\n",
            "a",
            "feeds: []  # mine\ntopics: {}\n",
        ),
        (
            "feeds:\n-\n  name: a\n  url: http://a/\n- name: b\n  url: http://b/\n",
            "a",
            "feeds:\n- name: b\n  url: http://b/\n",
        ),
    ],
)
def test_remove_entry(before: str, name: str, after: str) -> None:
    assert remove_entry(before, name) == after


@pytest.mark.parametrize(
    "text, message",
    [
        ("feeds:\n  - name: a\n    url: http://a/\n", "no feed named 'zz'"),
        ("feeds: []\n", "no feed named 'zz'"),
        ("feeds: [{name: zz, url: 'http://a/'}]\n", r"one \[\.\.\.\] list"),
    ],
)
def test_remove_entry_refusals(text: str, message: str) -> None:
    with pytest.raises(FeedsFileError, match=message):
        remove_entry(text, "zz")


def test_adding_to_the_shipped_file_changes_nothing_else() -> None:
    text = SHIPPED.read_text()
    after = add_entries(text, [NEW])
    last = "    tags: [tv, media, germany]\n    interval: 30m\n"
    at = text.index(last) + len(last)
    assert after == text[:at] + NEW_LINES + text[at:]
    assert [f.name for f in parse_config(after).feeds][-1] == "new"


@pytest.mark.parametrize("name", ["thr", "cartoonbrew", "elpais-cultura", "dwdl"])
def test_removing_from_the_shipped_file_takes_only_the_entrys_lines(name: str) -> None:
    text = SHIPPED.read_text()
    after = remove_entry(text, name)
    lines, kept = text.splitlines(keepends=True), after.splitlines(keepends=True)
    start = lines.index(f"  - name: {name}\n")
    end = start + 1
    while lines[end].startswith("    "):
        end += 1
    assert kept == lines[:start] + lines[end:]
    assert name not in {f.name for f in parse_config(after).feeds}


# -- the file ----------------------------------------------------------------------------


def test_an_invalid_result_is_not_written_and_names_the_real_file(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    shutil.copy(SHIPPED, path)
    before = path.read_text()
    bad = add_entries(before, [{**NEW, "interval": "30s"}])
    with pytest.raises(ConfigError) as caught:
        write_feeds_file(path, bad, expected=before)
    assert f"{path}:" in str(caught.value) and "must be at least 1m" in str(caught.value)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feeds.yaml"]  # no temp file left


def test_a_file_changed_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text("feeds: []\n")
    edited = add_entries("feeds: []\n", [NEW])
    path.write_text("feeds: []\n# someone else\n")
    with pytest.raises(FeedsFileError, match="changed while it was being edited"):
        write_feeds_file(path, edited, expected="feeds: []\n")
    assert path.read_text() == "feeds: []\n# someone else\n"


def test_write_keeps_the_files_permissions(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text("feeds: []\n")
    path.chmod(0o640)
    config = write_feeds_file(path, add_entries("feeds: []\n", [NEW]), expected="feeds: []\n")
    assert [f.name for f in config.feeds] == ["new"]
    assert path.stat().st_mode & 0o777 == 0o640


# -- end to end: reelwatch feeds add / remove against a loopback site ----------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "feeds.yaml"
    shutil.copy(SHIPPED, path)
    return path


def page_linking(href: str) -> bytes:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Variety - Entertainment News</title>\n"
        '<link rel="stylesheet" href="/wp-content/themes/variety/style.css">\n'
        '<link rel="alternate" type="application/rss+xml" title="Variety &raquo; Feed" '
        f'href="{href}">\n'
        "</head><body><h1>Variety</h1></body></html>"
    ).encode()


def test_feeds_add_discovers_the_feed_from_a_page_and_appends_it(
    feed_server: FeedServer, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feed_url = feed_server.add("/feed/variety.xml", VARIETY)
    page = feed_server.add("/", page_linking("/feed/variety.xml"), content_type="text/html")
    before = config.read_text()

    code = main(["feeds", "add", page, "--tags", "trade,film", "--interval", "30m",
                 "--config", str(config)])  # fmt: skip

    out = capsys.readouterr().out
    assert code == 0, out
    assert f'found {feed_url} (the page\'s <link rel="alternate">)' in out
    assert "title:    Variety - Article Feed" in out
    assert "items:    9" in out
    assert "newest:   2026-02-02 " in out
    assert "language: en" in out
    assert "added 'variety-article-feed'" in out
    added = (
        f"  - name: variety-article-feed\n    url: {feed_url}\n"
        "    tags: [trade, film]\n    interval: 30m\n"
    )
    last = "    tags: [tv, media, germany]\n    interval: 30m\n"
    at = before.index(last) + len(last)
    assert config.read_text() == before[:at] + added + before[at:]
    feed = load_config(config).feed("variety-article-feed")
    assert feed and feed.tags == ["trade", "film"]
    assert {r.headers["user-agent"] for r in feed_server.requests} == {USER_AGENT}


def test_feeds_add_takes_a_feed_url_as_it_is(
    feed_server: FeedServer, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = feed_server.add("/rss", VARIETY)
    assert main(["feeds", "add", url, "--name", "var", "--language", "EN",
                 "--config", str(config)]) == 0  # fmt: skip
    assert "(the URL itself)" in capsys.readouterr().out
    feed = load_config(config).feed("var")
    assert feed and feed.url == url and feed.language == "en"
    assert [r.path for r in feed_server.requests] == ["/rss"]


def test_feeds_add_tries_common_paths_when_the_page_links_no_feed(
    feed_server: FeedServer, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = feed_server.add("/news", b"<html><head><title>x</title></head></html>",
                           content_type="text/html")  # fmt: skip
    feed_server.add("/rss", VARIETY)
    assert main(["feeds", "add", page, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"found {feed_server.url('/rss')} (a common feed path)" in out
    assert [r.path for r in feed_server.requests] == ["/news", "/feed/", "/rss"]


def test_feeds_add_without_a_feed_says_so_and_writes_nothing(
    feed_server: FeedServer, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = feed_server.add("/", page_linking("/gone.xml"), content_type="text/html")
    before = config.read_text()
    assert main(["feeds", "add", page, "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "no feed found" in err
    assert f"{feed_server.url('/gone.xml')}: resource not found (404 status code)" in err
    assert config.read_text() == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--name", "thr"], "has a feed named 'thr'"),
        (["--name", "other"], "is in {config} as 'variety'"),
    ],
)
def test_feeds_add_refuses_a_duplicate_before_fetching(
    feed_server: FeedServer,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    before = config.read_text()
    # the same feed as the shipped 'variety', written differently
    assert (
        main(["feeds", "add", "http://www.variety.com/feed", *argv, "--config", str(config)]) == 1
    )
    assert message.format(config=config) in capsys.readouterr().err
    assert config.read_text() == before and not feed_server.requests


def test_feeds_add_refuses_a_discovered_feed_that_is_already_there(
    feed_server: FeedServer, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feed_url = feed_server.add("/feed/", VARIETY)
    page = feed_server.add("/", page_linking("/feed/"), content_type="text/html")
    assert main(["feeds", "add", feed_url, "--name", "mine", "--config", str(config)]) == 0
    before = config.read_text()
    assert main(["feeds", "add", page, "--config", str(config)]) == 1
    assert f"{feed_url} is in {config} as 'mine'" in capsys.readouterr().err
    assert config.read_text() == before


@pytest.mark.parametrize(
    "option, message",
    [
        (["--interval", "30s"], "'30s' is under a minute (1m at least)"),
        (["--name", "THR Roma"], "'THR Roma': names are letters, digits and - _ ."),
    ],
)
def test_feeds_add_refuses_a_bad_option_before_fetching_and_writes_nothing(
    feed_server: FeedServer, config: Path, capsys: pytest.CaptureFixture[str],
    option: list[str], message: str,
) -> None:  # fmt: skip
    url = feed_server.add("/rss", VARIETY)
    before = config.read_text()
    with pytest.raises(SystemExit) as exited:
        main(["feeds", "add", url, *option, "--config", str(config)])
    assert exited.value.code == 2 and message in capsys.readouterr().err
    assert feed_server.seen("/rss") == [] and config.read_text() == before


def test_feeds_remove_takes_out_only_that_entry(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = config.read_text()
    assert main(["feeds", "remove", "cartoonbrew", "--config", str(config)]) == 0
    assert "removed 'cartoonbrew' (https://www.cartoonbrew.com/feed)" in capsys.readouterr().out
    entry = (
        "  - name: cartoonbrew\n    url: https://www.cartoonbrew.com/feed\n    language: en\n"
        "    tags: [animation]\n    interval: 30m\n"
    )
    assert config.read_text() == before.replace(entry, "")
    assert before.count(entry) == 1


def test_feeds_remove_an_unknown_name_fails_with_a_hint(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = config.read_text()
    assert main(["feeds", "remove", "varety", "--config", str(config)]) == 1
    assert "no feed named 'varety'" in (err := capsys.readouterr().err) and "variety" in err
    assert config.read_text() == before


def test_feeds_remove_refuses_a_feed_a_slack_route_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "feeds.yaml"
    text = (
        "feeds:\n  - name: a\n    url: http://a/\n  - name: b\n    url: http://b/\n"
        "slack:\n  routes:\n    - {feeds: [b], channel: '#b'}\n"
    )
    path.write_text(text)
    assert main(["feeds", "remove", "b", "--config", str(path)]) == 2
    assert "unknown feed 'b'" in capsys.readouterr().err
    assert path.read_text() == text


def test_feeds_add_says_when_the_items_are_not_in_the_declared_language(
    feed_server: FeedServer, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = feed_server.add("/ciak", fixture("ciak_it_rescraped_rss2.xml"))  # declares en
    assert main(["feeds", "add", url, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "language: en (declared, but its items read as it: pass --language it?)" in out
