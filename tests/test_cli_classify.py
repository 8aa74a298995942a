"""`reelwatch classify` explains; `reelwatch reclassify` tries a rule change on history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.cli import main
from storage import Repository, make_engine
from tests.conftest import fixture, write_config
from tests.servers import FeedServer

SHIPPED = str(Path(__file__).parent.parent / "feeds.yaml")


def test_classify_explains_topics_terms_and_positions(capsys: pytest.CaptureFixture[str]) -> None:
    title = "Lionsgate firma con Runway: l'intelligenza artificiale entra nel cinema"
    assert main(["classify", title, "--lang", "it", "--config", SHIPPED]) == 0
    out = capsys.readouterr().out
    assert "ai_entertainment" in out and "deals_partnerships" in out
    assert "'intelligenza artificiale' in title at 30" in out
    assert "'Runway' in title at 20" in out and "'Lionsgate' in title at 0" in out
    assert main(["classify", title, "--config", SHIPPED, "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["relevant"] is True
    gate = next(m for m in result["matches"] if m["topic"] == "ai_entertainment")
    assert {"term": "cinema", "field": "title", "offset": 65} in gate["positions"]


def test_classify_says_when_nothing_matches(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "Ai Weiwei opens a show in Rome", "--config", SHIPPED]) == 0
    assert "no topic matched" in capsys.readouterr().out


def test_reclassify_dry_run_then_apply_then_alert(
    feed_server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = feed_server.add("/ars.xml", fixture("arstechnica_2024-04-01_rss2.xml"))
    config = write_config(tmp_path, {"ars": url})
    assert main(["poll", "--config", str(config)]) == 0
    repo = Repository(make_engine())
    before = {s.id: s.matches for s in repo.list_items(limit=None)}
    deliveries = repo.delivery_counts()
    capsys.readouterr()

    # the user adds a topic
    config.write_text(config.read_text() + "  telescope:\n    label: T\n    query: telescope*\n")
    args = ["reclassify", "--config", str(config), "--since", "36500d"]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "telescope: +" in out and "would match" in out and "Telescope" in out
    assert {s.id: s.matches for s in repo.list_items(limit=None)} == before  # nothing changed

    assert main(args) == 0
    telescope = repo.list_items(topic="telescope", limit=None)
    assert telescope and all("Telescope" in s.item.title or "telescope" in s.item.summary.lower()
                             for s in telescope)  # fmt: skip
    assert repo.delivery_counts() == deliveries  # old items do not alert by default

    config.write_text(config.read_text().replace("query: telescope*", "query: cicada*"))
    assert main([*args, "--alert"]) == 0
    assert "alerts queued" in capsys.readouterr().out
    assert sum(repo.delivery_counts().values()) > sum(deliveries.values())
