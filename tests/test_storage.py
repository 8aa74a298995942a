"""Storage behaves the same on SQLite and PostgreSQL: nothing stored twice, the outbox exact."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from alerts.routing import Router
from monitor.cli import main
from monitor.types import FeedUpdate, Item, Match, ParsedFeed
from storage import Repository, make_engine
from storage.db import DatabaseLockedError, exclusive_run
from storage.repo import PollWrite
from tests.conftest import fixture, write_config
from tests.servers import FeedServer

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
AI_NEWS = Router(default_channel="#ai-news", transport="bot")
CONSOLE = Router(default_channel="console", transport="console")


def update(now: datetime = NOW) -> FeedUpdate:
    return FeedUpdate(
        "ok", 200, None, None, '"e"', "lm", 0, now, now, now + timedelta(minutes=15), False, 12
    )


def items(n: int, prefix: str = "g") -> tuple[Item, ...]:
    return tuple(
        Item(
            "thr",
            f"{prefix}{i}",
            f"{prefix}{i}",
            f"https://thr.example/{prefix}{i}",
            f"Title {i}",
            "summary",
            NOW - timedelta(hours=i),
            "en",
            "Ann",
            ("Film",),
        )
        for i in range(n)
    )


def parsed(batch: tuple[Item, ...], relevant: set[str]) -> ParsedFeed:
    matches = {i.identity: (Match("ai", ("AI",), 2.0),) for i in batch if i.identity in relevant}
    return ParsedFeed("THR", "en", batch, matches)


@pytest.fixture
def repo(database_url: str) -> Repository:
    r = Repository(make_engine(database_url))
    r.create_schema()
    return r


def test_store_poll_is_idempotent_and_writes_the_outbox(repo: Repository) -> None:
    batch = items(1200)  # more than one insert chunk
    result = repo.store_poll(
        "thr", "https://thr.example/feed", update(), parsed(batch, {"g1", "g2"}), AI_NEWS, NOW
    )
    assert (result.new_items, result.new_matches, result.new_deliveries) == (1200, 2, 2)
    again = repo.store_poll(
        "thr", "https://thr.example/feed", update(), parsed(batch, {"g1", "g2"}), AI_NEWS, NOW
    )
    assert (again.new_items, again.new_matches, again.new_deliveries) == (0, 0, 0)
    assert repo.count_items() == 1200
    state = repo.feed_state("thr")
    assert state.etag == '"e"' and state.polls == 2 and state.title == "THR"
    assert state.next_poll == NOW + timedelta(minutes=15)


def test_a_batch_of_polls_saves_every_feeds_state(repo: Repository) -> None:
    """One transaction for the polls the storage thread found queued: each feed's state
    is saved, a feed polled twice in the batch counts both polls, the later one last."""
    later = replace(update(NOW + timedelta(minutes=15)), etag='"f"')
    failed = replace(update(), last_status="failed", last_error="HTTP 503", etag=None)
    results = repo.store_polls([
        PollWrite("thr", "https://thr.example/feed", update(), parsed(items(3), set()), None, NOW),
        PollWrite("variety", "https://variety.example/feed", failed, None, None, NOW),
        PollWrite("thr", "https://thr.example/feed", later, None, None, NOW),
    ])  # fmt: skip
    assert [getattr(r, "new_items", r) for r in results] == [3, 0, 0]
    states = repo.feed_states()
    assert (states["thr"].polls, states["thr"].etag, states["thr"].title) == (2, '"f"', "THR")
    assert (states["variety"].last_status, states["variety"].last_error) == (
        "failed", "HTTP 503",
    )  # fmt: skip


def test_a_new_guid_for_a_known_url_is_not_a_new_item(repo: Repository) -> None:
    repo.store_poll("thr", "u", update(), parsed(items(3, "a"), set()), None, NOW)
    renamed = tuple(
        Item(
            i.feed,
            "b" + i.identity,
            "b" + i.identity,
            i.url,
            i.title,
            i.summary,
            i.published,
            i.language,
        )
        for i in items(3, "a")
    )
    assert repo.store_poll("thr", "u", update(), parsed(renamed, set()), None, NOW).new_items == 0


def test_items_round_trip_with_utc_times_and_matches(repo: Repository) -> None:
    repo.store_poll("thr", "u", update(), parsed(items(5), {"g0"}), CONSOLE, NOW)
    stored = repo.list_items(topic="ai")
    assert len(stored) == 1
    (one,) = stored
    assert one.item == items(5)[0]
    assert one.item.published.tzinfo is UTC and one.matches == (Match("ai", ("AI",), 2.0),)
    assert len(repo.list_items(since=NOW - timedelta(hours=2, minutes=30))) == 3
    assert repo.list_items(feed="other") == []


def test_outbox_retry_and_sent_are_exact(repo: Repository) -> None:
    repo.store_poll("thr", "u", update(), parsed(items(3), {"g0", "g1"}), AI_NEWS, NOW)
    first, second = repo.pending_deliveries(NOW)
    repo.mark_delivery_sent(first.id, NOW)
    repo.mark_delivery_retry(second.id, "Slack answered HTTP 500", NOW + timedelta(minutes=1))
    assert repo.pending_deliveries(NOW) == []
    (due,) = repo.pending_deliveries(NOW + timedelta(minutes=1))
    assert due.id == second.id and due.attempts == 1
    repo.mark_delivery_sent(due.id, NOW)
    repo.mark_delivery_sent(due.id, NOW)  # a second mark changes nothing
    assert repo.delivery_counts() == {"sent": 2}
    assert all(d.attempts in (1, 2) for d in repo.deliveries())


def test_heartbeat(repo: Repository) -> None:
    assert repo.heartbeat("scheduler") is None
    repo.write_heartbeat("scheduler", NOW)
    repo.write_heartbeat("scheduler", NOW + timedelta(seconds=30))
    assert repo.heartbeat("scheduler") == NOW + timedelta(seconds=30)


def test_the_feeds_yaml_applied_is_kept_per_file_with_when_it_was_first_applied(
    repo: Repository,
) -> None:
    assert repo.applied_config("/etc/reelwatch/feeds.yaml") is None
    repo.save_applied_config("/etc/reelwatch/feeds.yaml", "feeds: []\n", NOW)
    repo.save_applied_config("/etc/reelwatch/feeds.yaml", "feeds: []\n", NOW + timedelta(hours=1))
    assert repo.applied_config("/etc/reelwatch/feeds.yaml") == ("feeds: []\n", NOW)
    repo.save_applied_config("/etc/reelwatch/feeds.yaml", "topics: {}\n", NOW + timedelta(hours=2))
    repo.save_applied_config("/srv/other.yaml", "feeds: []\n", NOW)
    assert repo.applied_config("/etc/reelwatch/feeds.yaml") == (
        "topics: {}\n",
        NOW + timedelta(hours=2),
    )
    assert repo.applied_config("/srv/other.yaml") == ("feeds: []\n", NOW)


def test_prune_drops_closed_stories_keys_and_gone_workers_heartbeats(repo: Repository) -> None:
    """What nothing reads any more does not pile up over months; the archive stays."""
    window = timedelta(hours=72)
    old, new = items(1, "old"), items(1, "new")
    repo.store_poll("thr", "https://thr.example/feed", update(), parsed(old, {"old0"}),
                    AI_NEWS, NOW)  # fmt: skip
    later = NOW + window + timedelta(days=2)
    repo.store_poll("thr", "https://thr.example/feed", update(later), parsed(new, {"new0"}),
                    AI_NEWS, later)  # fmt: skip
    repo.write_heartbeat("worker:host-a:1", NOW - timedelta(days=3))  # gone a week by later
    repo.write_heartbeat("worker:host-b:2", later)
    repo.write_heartbeat("scheduler", NOW)

    def keys() -> set[int]:
        with repo.engine.connect() as conn:
            return set(conn.execute(text("select distinct story_id from story_keys")).scalars())

    before = keys()
    assert len(before) == 2
    pruned = repo.prune(later, window)
    assert pruned["story_keys"] >= 1 and pruned["heartbeats"] == 1
    (kept,) = keys()
    assert repo.story_of([repo.list_items()[0].id])  # the newest item's story is the open one
    assert kept in before and repo.count_items() == 2  # items and stories are the archive
    assert repo.heartbeat("worker:host-a:1") is None
    assert repo.heartbeat("worker:host-b:2") == later and repo.heartbeat("scheduler") == NOW
    assert repo.prune(later, window) == {"story_keys": 0, "heartbeats": 0}


def test_one_run_per_database(database_url: str) -> None:
    engine = make_engine(database_url)
    with exclusive_run(engine), pytest.raises(DatabaseLockedError, match="already using"):  # noqa: SIM117
        with exclusive_run(make_engine(database_url)):
            pass
    with exclusive_run(make_engine(database_url)):  # released
        pass


def test_poll_end_to_end(database_url: str, feed_server: FeedServer, tmp_path: Path) -> None:
    url = feed_server.add("/ars.xml", fixture("arstechnica_2024-04-01_rss2.xml"))
    config = write_config(tmp_path, {"ars": url})
    assert main(["poll", "--config", str(config)]) == 0
    assert main(["poll", "--config", str(config)]) == 0
    repo = Repository(make_engine(database_url))
    assert repo.count_items() == 20
    assert repo.feed_state("ars").last_status == "unchanged"
    assert repo.delivery_counts() == {"sent": 5}


def test_failed_deliveries_moved_to_one_channel_keep_one_per_item(repo: Repository) -> None:
    from alerts.routing import Route

    routes = tuple(Route(frozenset(), frozenset(), c, 0.0) for c in ("#a", "#b"))
    batch = items(2)
    repo.store_polls([PollWrite("thr", "u", update(), parsed(batch, {i.identity for i in batch}),
                                Router(routes=routes, transport="bot"), NOW)])  # fmt: skip
    for d in repo.pending_deliveries(NOW):
        repo.mark_delivery_failed(d.id, "channel not found")
    assert repo.retry_failed_deliveries(None, NOW, channel="#c") == 2  # one per item
    assert sorted((d.channel, d.status) for d in repo.deliveries()) == [
        ("#b", "failed"), ("#b", "failed"), ("#c", "pending"), ("#c", "pending"),
    ]  # fmt: skip
