"""Feed text is data, never Slack syntax."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from alerts.slack import escape, render_alert, safe_link
from monitor.types import Item, Match

MATCH = (Match("ai", ("AI",), 2.0),)


def item(title: str = "Lionsgate signs with Runway", summary: str = "", url: str | None = None,
         feed: str = "thr") -> Item:  # fmt: skip
    return Item(feed, "id", None, url or "https://example.org/a", title, summary,
                datetime(2026, 11, 24, 8, 30, tzinfo=UTC), "en")  # fmt: skip


HOSTILE = [
    "<!channel> deal signed",
    "<!here|here> ping",
    "hello <@U123ABC>",
    "see <#C123|general>",
    "<!subteam^S123|@team> wake up",
    "<https://evil.example|Variety exclusive>",
    "&lt;!channel&gt; double-encoded",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_mentions_and_links_in_feed_text_stay_inert(text: str) -> None:
    from monitor.normalize import clean_text

    message = render_alert(item(title=clean_text(text, 500), summary=clean_text(text, 500)), MATCH)
    everything = json.dumps(message.blocks) + message.text
    for live in ("<!channel", "<!here", "<@U", "<#C", "<!subteam", "<https://evil"):
        assert live not in everything


@pytest.mark.parametrize(
    "text, escaped",
    [
        ("A & B", "A &amp; B"),
        ("<b>", "&lt;b&gt;"),
        (
            "*bold* _it_ ~s~ `c`",
            "*\u200dbold*\u200d _\u200dit_\u200d ~\u200ds~\u200d `\u200dc`\u200d",
        ),
    ],
)
def test_escape(text: str, escaped: str) -> None:
    assert escape(text) == escaped


@pytest.mark.parametrize(
    "url, ok",
    [
        ("https://variety.com/a", True),
        ("javascript:alert(1)", False),
        ("https://x.org/a|click", False),
        ("https://x.org/<a>", False),
        (None, False),
    ],
)
def test_links_are_http_only_and_cannot_break_out(url: str | None, ok: bool) -> None:
    assert (safe_link(url) is not None) is ok


def test_alert_shows_title_link_outlet_time_topics_and_why() -> None:
    message = render_alert(
        item(summary="The studio will train a model."), MATCH, "The Hollywood Reporter"
    )
    section = message.blocks[0]["text"]["text"]
    context = " ".join(e["text"] for e in message.blocks[1]["elements"])
    assert section.startswith("*<https://example.org/a|Lionsgate signs with Runway>*")
    assert "train a model" in section
    assert "The Hollywood Reporter" in context and "24 Nov 2026 08:30 UTC" in context
    assert "ai" in context and "AI" in context
    assert "Lionsgate signs with Runway" in message.text


def test_long_text_stays_within_slack_limits() -> None:
    message = render_alert(item(title="x" * 10_000, summary="y " * 10_000), MATCH)
    assert len(message.text) <= 40_000
    assert all(len(b["text"]["text"]) <= 3000 for b in message.blocks if "text" in b)
