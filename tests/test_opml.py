"""OPML: reading what feed readers export, writing what they import, and the round trip."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.config import load_config
from monitor.opml import ExportFeed, OpmlError, OpmlFeed, parse_opml, plan_import, render_opml

SHIPPED = Path(__file__).parent.parent / "feeds.yaml"
FEEDLY = Path(__file__).parent / "fixtures" / "opml" / "feedly_entertainment.opml"


def opml(body: str, head: str = "<head><title>t</title></head>") -> bytes:
    prolog = '<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">'
    return f"{prolog}{head}<body>{body}</body></opml>".encode()


@pytest.mark.parametrize(
    "body, feeds",
    [
        (
            '<outline type="rss" text="Variety" xmlUrl="https://variety.com/feed/"/>',
            [OpmlFeed("Variety", "https://variety.com/feed/")],
        ),
        (  # title beats text; htmlUrl and language kept; folders are tags, outermost first
            '<outline text="Film"><outline text="Trades"><outline type="rss" text="v" '
            'title="Variety" xmlUrl="https://variety.com/feed/" htmlUrl="https://variety.com" '
            'language="en-US"/></outline></outline>',
            [
                OpmlFeed(
                    "Variety",
                    "https://variety.com/feed/",
                    "https://variety.com",
                    ("Film", "Trades"),
                    "en",
                )
            ],
        ),
        (  # category: tags and /paths, after the folder, each once
            '<outline text="trade"><outline text="thr" xmlUrl="https://t/" '
            'category="trade,film, tv,/Festivals/Cannes"/></outline>',
            [OpmlFeed("thr", "https://t/", None, ("trade", "film", "tv", "Festivals", "Cannes"))],
        ),
        (  # attribute names in any case (some readers write xmlurl)
            '<outline TEXT="x" xmlurl=" https://x/feed " HTMLURL="https://x/"/>',
            [OpmlFeed("x", "https://x/feed", "https://x/")],
        ),
        (  # an empty folder, a separator, a folder without a name
            '<outline text="Empty"/><outline text="---"/><outline><outline text="a" '
            'xmlUrl="https://a/"/></outline>',
            [OpmlFeed("a", "https://a/")],
        ),
        (
            '<outline text="a" xmlUrl="https://a/" language="english"/>',
            [OpmlFeed("a", "https://a/")],
        ),
        ("", []),
    ],
)
def test_parse_opml(body: str, feeds: list[OpmlFeed]) -> None:
    assert parse_opml(opml(body)) == feeds


@pytest.mark.parametrize(
    "data, message",
    [
        (  # billion laughs
            b'<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><opml><body/></opml>',
            "declares a DTD or entities",
        ),
        (  # even an external DTD without a subset
            b'<!DOCTYPE opml SYSTEM "http://example.org/opml.dtd"><opml><body/></opml>',
            "declares a DTD",
        ),
        ("<!doctype opml><opml><body/></opml>".encode("utf-16"), "declares a DTD"),
        (b"<opml><body><outline></body></opml>", "not well-formed XML"),
        (b"<rss><channel/></rss>", "not OPML: the document is <rss>"),
        (b'<opml version="2.0"><head/></opml>', "there is no <body>"),
        (b"", "not well-formed XML"),
    ],
)
def test_parse_opml_refusals(data: bytes, message: str) -> None:
    with pytest.raises(OpmlError, match=message):
        parse_opml(data)


def test_parse_a_feedly_export() -> None:
    feeds = parse_opml(FEEDLY.read_bytes())
    assert len(feeds) == 18
    assert feeds[0] == OpmlFeed("Variety", "https://variety.com/feed/", "https://variety.com",
                                ("Film",))  # fmt: skip
    assert [f.title for f in feeds if f.url == "https://deadline.com/feed/"] == ["Deadline"] * 2
    assert feeds[-2].title == "befores & afters" and feeds[-2].tags == ("Animation & VFX",)
    assert feeds[-1].title == "The Verge -  All Posts" and feeds[-1].tags == ()


EXISTING = [
    ("variety", "https://variety.com/feed/"),
    ("thr", "https://www.hollywoodreporter.com/feed/"),
]


@pytest.mark.parametrize(
    "outlines, added, skipped",
    [
        (  # by URL, however it is written
            [OpmlFeed("Variety", "http://www.variety.com/feed"), OpmlFeed("THR", "https://hollywoodreporter.com/feed/?utm_source=feedly")],
            [],
            ["already in feeds.yaml as 'variety'", "already in feeds.yaml as 'thr'"],
        ),
        (  # names from titles, made unique against the file and each other
            [OpmlFeed("Variety", "https://variety.com/v/film/feed/"), OpmlFeed("Variety", "https://variety.com/v/tv/feed/"),
             OpmlFeed("", "https://www.deadline.com/feed/")],
            [{"name": "variety-2", "url": "https://variety.com/v/film/feed/"},
             {"name": "variety-3", "url": "https://variety.com/v/tv/feed/"},
             {"name": "www-deadline-com", "url": "https://www.deadline.com/feed/"}],
            [],
        ),
        (  # one feed in two folders: added once, with both tags
            [OpmlFeed("Deadline", "https://deadline.com/feed/", tags=("Film",)),
             OpmlFeed("Deadline", "https://deadline.com/feed", tags=("TV",))],
            [{"name": "deadline", "url": "https://deadline.com/feed/", "tags": ["Film", "TV"]}],
            [],
        ),
        (
            [OpmlFeed("Il Post", "https://www.ilpost.it/feed/", language="it", tags=("italia",))],
            [{"name": "il-post", "url": "https://www.ilpost.it/feed/", "language": "it",
              "tags": ["italia"]}],
            [],
        ),
        (
            [OpmlFeed("Local", "file:///etc/passwd"), OpmlFeed("Gopher", "gopher://x/")],
            [],
            ["not an http:// or https:// URL"] * 2,
        ),
    ],
)  # fmt: skip
def test_plan_import(outlines: list[OpmlFeed], added: list[dict], skipped: list[str]) -> None:
    plan = plan_import(outlines, EXISTING)
    assert list(plan.added) == added
    assert [why for _, why in plan.skipped] == skipped


def test_render_opml() -> None:
    feeds = [
        ExportFeed("thr", "https://www.hollywoodreporter.com/feed/", ("trade", "film"), "en"),
        ExportFeed("verge", "https://www.theverge.com/rss/index.xml?a=1&b=2"),
        ExportFeed("billboard", "https://www.billboard.com/feed/", ("music",)),
        ExportFeed("variety", "https://variety.com/feed/", ("trade",)),
    ]
    created = datetime(2026, 2, 2, 9, 14, 52, tzinfo=UTC)
    assert render_opml(feeds, title="reelwatch feeds", created=created).decode() == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<opml version="2.0">\n'
        "  <head>\n"
        "    <title>reelwatch feeds</title>\n"
        "    <dateCreated>Mon, 02 Feb 2026 09:14:52 +0000</dateCreated>\n"
        "  </head>\n"
        "  <body>\n"
        '    <outline text="trade" title="trade">\n'
        '      <outline type="rss" text="thr" title="thr" '
        'xmlUrl="https://www.hollywoodreporter.com/feed/" category="trade,film" language="en" />\n'
        '      <outline type="rss" text="variety" title="variety" '
        'xmlUrl="https://variety.com/feed/" />\n'
        "    </outline>\n"
        '    <outline text="music" title="music">\n'
        '      <outline type="rss" text="billboard" title="billboard" '
        'xmlUrl="https://www.billboard.com/feed/" />\n'
        "    </outline>\n"
        '    <outline type="rss" text="verge" title="verge" '
        'xmlUrl="https://www.theverge.com/rss/index.xml?a=1&amp;b=2" />\n'
        "  </body>\n"
        "</opml>\n"
    )


# -- end to end -------------------------------------------------------------------------


def test_feeds_import_adds_what_is_missing_and_says_what_it_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "feeds.yaml"
    shutil.copy(SHIPPED, path)
    before = path.read_text()
    assert main(["feeds", "import", str(FEEDLY), "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "added    tvline  https://tvline.com/feed/  [TV]" in out
    assert "added    befores-afters  https://beforesandafters.com/feed/  [Animation & VFX]" in out
    assert "skipped  Variety  https://variety.com/feed/: already in feeds.yaml as 'variety'" in out
    assert out.splitlines()[-1] == f"5 added to {path}, 13 skipped"
    after = path.read_text()
    last = "    tags: [tv, media, germany]\n    interval: 30m\n"
    at = before.index(last) + len(last)
    assert after[:at] == before[:at] and after.endswith(before[at:])
    assert after[at : len(after) - len(before) + at] == (
        "  - name: tvline\n    url: https://tvline.com/feed/\n    tags: [TV]\n"
        "  - name: vulture\n    url: https://www.vulture.com/rss/index.xml\n    tags: [TV]\n"
        "  - name: pitchfork\n    url: https://pitchfork.com/rss/news/\n    tags: [Music]\n"
        "  - name: kotaku\n    url: https://kotaku.com/rss\n    tags: [Games]\n"
        "  - name: befores-afters\n    url: https://beforesandafters.com/feed/\n"
        "    tags: [Animation & VFX]\n"
    )
    # a second import finds nothing new and leaves the file alone
    assert main(["feeds", "import", str(FEEDLY), "--config", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"0 added to {path}, 18 skipped"
    assert path.read_text() == after


def test_feeds_import_into_an_empty_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text("# my feeds\n")
    assert main(["feeds", "import", str(FEEDLY), "--config", str(path)]) == 0
    config = load_config(path)
    assert len(config.feeds) == 17  # Deadline is in two folders
    deadline = config.feed("deadline")
    assert deadline and deadline.tags == ["Film", "TV"]
    assert config.feed("the-verge-all-posts") and config.feed("the-verge-all-posts").tags == []
    assert path.read_text().startswith("# my feeds\nfeeds:\n  - name: variety\n")


@pytest.mark.parametrize(
    "data, message",
    [
        (b'<!DOCTYPE x [<!ENTITY a "b">]><opml/>', "declares a DTD or entities"),
        (b"not xml", "not well-formed XML"),
    ],
)
def test_feeds_import_refuses_a_bad_file_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes, message: str
) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text("feeds: []\n")
    bad = tmp_path / "bad.opml"
    bad.write_bytes(data)
    assert main(["feeds", "import", str(bad), "--config", str(path)]) == 1
    assert message in capsys.readouterr().err
    assert path.read_text() == "feeds: []\n"


def test_feeds_import_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text("feeds: []\n")
    assert main(["feeds", "import", str(tmp_path / "nope.opml"), "--config", str(path)]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_export_then_import_into_an_empty_file_gives_the_same_feeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["feeds", "export", "--config", str(SHIPPED)]) == 0
    exported = tmp_path / "feeds.opml"
    exported.write_text(capsys.readouterr().out)
    empty = tmp_path / "feeds.yaml"
    empty.write_text("feeds: []\n")

    assert main(["feeds", "import", str(exported), "--config", str(empty)]) == 0

    def feeds(path: Path) -> set[tuple]:
        return {(f.name, f.url, tuple(f.tags), f.language) for f in load_config(path).feeds}

    assert feeds(empty) == feeds(SHIPPED)
    assert len(load_config(empty).feeds) == len(load_config(SHIPPED).feeds)


def test_export_puts_a_feed_in_its_first_tags_folder_with_all_tags_as_category(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.opml"
    assert main(["feeds", "export", "--out", str(out), "--config", str(SHIPPED)]) == 0
    assert "exported" in capsys.readouterr().err
    feeds = parse_opml(out.read_bytes())
    thr = next(f for f in feeds if f.title == "thr-roma")
    assert thr.tags == ("trade", "film", "tv", "italy") and thr.language == "it"
    text = out.read_text()
    folder = text.index('<outline text="trade" title="trade">')
    assert folder < text.index('text="thr-roma"') < text.index("</outline>", folder)
    assert 'category="trade,film,tv,italy"' in text
