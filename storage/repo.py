"""Every query reelwatch runs, named by intent. The rest of the code never writes SQL.

Methods are synchronous; the service calls them from one dedicated thread so
the event loop never waits on the database.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import os
import secrets
import socket
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Engine,
    Text,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlmodel import Session

from monitor import stories as story_rules
from monitor.types import FeedState, FeedUpdate, Item, Match, ParsedBlob, ParsedFeed
from storage.migrate import upgrade_schema
from storage.models import (
    AppliedConfigRow,
    DeliveryRow,
    DigestRow,
    FeedNoticeRow,
    FeedRow,
    HeartbeatRow,
    ItemRow,
    MatchRow,
    StoryItemRow,
    StoryKeyRow,
    StoryMessageRow,
    StoryRow,
)
from storage.types import (
    DELIVERY_LEASE,
    DeliveryRecord,
    DigestRecord,
    FeedActivity,
    PendingDelivery,
    PollWrite,
    SchemaUpgrade,
    StoredItem,
    StoreResult,
    StoryInfo,
    StoryRecord,
)

_RETRY_EARLY = timedelta(seconds=5)  # see _digest_takeable
_STALE_SENDING = timedelta(hours=1)  # a digest "sending" this long was cut off: take it again
_WORKER = f"{socket.gethostname()}:{os.getpid()}"
_STORY_SIGNATURES = 10  # members of a story a new item is compared with
_STORY_CANDIDATES = 12  # open stories a new item is compared with, those sharing most keys
# a key shared by more open stories than this is no candidate key (the bound keeps the
# rows read per new item from growing with the number of open stories)
_STORY_KEY_SPREAD = 100
_COMMON_KEYS_KEPT = timedelta(hours=1)  # how long such a key is not looked up again
# stories kept parsed between polls (~11 KB each): with 500, a cold poll of 10,000 feeds
# (2,017 open stories) read each back ~80 times, a fifth of the storage process's CPU;
# 1,500 cost the same CPU as all of them, and 3 MiB less of that process's 97 MiB peak
_STORY_CACHE = 1_500
_CHUNK = 500  # values per IN (...): well under SQLite's 32,766 bound parameters
_FEED_UPDATE_FIELDS = (
    "last_status", "last_http_status", "last_error", "warning", "etag", "last_modified",
    "consecutive_failures", "last_attempt", "last_success", "next_poll", "disabled",
)  # fmt: skip


class _Relevant(NamedTuple):
    """A new item some topic matched, on its way to a story and its deliveries."""

    item_id: int
    item: Item
    matches: Sequence[Match]
    now: datetime  # when its poll ran
    signature: story_rules.Signature | None  # worked out by the parse worker, if it did


@dataclass(frozen=True, slots=True)
class _NewItems:
    """What one poll's items added: their ids by identity, matches, relevant ones."""

    ids: dict[str, int]
    matches: int
    relevant: list[_Relevant]


def _to_item(row: ItemRow) -> Item:
    return Item(
        feed=row.feed,
        identity=row.identity,
        guid=row.guid,
        url=row.url,
        title=row.title,
        summary=row.summary,
        published=row.published,
        language=row.language,
        author=row.author,
        categories=tuple(row.categories or ()),
    )


def _feed_state_row(p: PollWrite) -> dict[str, Any]:
    u = p.update
    values = {f: getattr(u, f) for f in _FEED_UPDATE_FIELDS}
    title = p.parsed.title if p.parsed else None
    values |= {"name": p.feed, "url": p.url, "title": title or u.title, "polls": 1,
               "mean_poll_ms": float(u.elapsed_ms), "lease_until": None,
               "leased_by": None}  # fmt: skip
    return values


def _match_row(item_id: int, m: Match) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "topic": m.topic,
        "terms": list(m.terms),
        "score": m.score,
        "positions": [list(p) for p in m.positions],
    }


def _to_digest(row: DigestRow) -> DigestRecord:
    return DigestRecord(
        row.name, row.period_start, row.period_end, row.status, row.attempts, row.items,
        tuple(row.pending or ()), row.last_error, row.next_attempt, row.sent_at,
    )  # fmt: skip


def _digest_takeable(now: datetime) -> Any:
    """A digest period due to be sent again: a retry that is due, or a send cut off
    mid-way (a crash) an hour ago. A retry falls due a little early: the service checks
    once a minute, and a retry promised a minute after one check came due milliseconds
    after the next and waited a minute more."""
    table = DigestRow.__table__
    due_retry = and_(table.c.status == "retry", table.c.next_attempt <= now + _RETRY_EARLY)
    cut_off = and_(table.c.status == "sending", table.c.updated <= now - _STALE_SENDING)
    return due_retry | cut_off


class Repository:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.story_rules = story_rules.StoryRules()
        self.gate: str | None = None  # the topic every relevant item has: not a story topic
        # open stories as last read or written, with their signatures parsed: reused while
        # the row's (items, last_seen) still match, so another worker's change is seen
        self._stories: dict[int, _OpenStory] = {}
        # keys found shared by too many open stories to tell any apart ("e:apple",
        # "w:games"), and when: not read again for an hour (a trade: by then some of those
        # stories may have closed; each process keeps its own)
        self._common_keys: dict[str, datetime] = {}

    def configure_stories(self, rules: story_rules.StoryRules, gate: str | None) -> None:
        self.story_rules, self.gate = rules, gate

    def _insert(self) -> Any:
        """The dialect's INSERT, which knows ON CONFLICT."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert

    def create_schema(self) -> SchemaUpgrade:
        """Bring the database to this release's schema: the Alembic migrations up to head
        (an empty database is created; one from before migrations is taken as the baseline)."""
        return upgrade_schema(self.engine)

    # -- feeds -------------------------------------------------------------------------------

    def feed_states(self) -> dict[str, FeedState]:
        # Core rows, not ORM objects: for 10,000 feeds an ORM session's objects and
        # identity map took 25 MiB at once, which the storage process kept afterwards
        with self.engine.connect() as conn:
            return {row.name: FeedState(**row._mapping) for row in conn.execute(_FEED_STATES)}

    def feed_state(self, name: str) -> FeedState | None:
        with self.engine.connect() as conn:
            row = conn.execute(_FEED_STATES.where(FeedRow.__table__.c.name == name)).first()
            return FeedState(**row._mapping) if row else None

    def recent_identities(self, feed: str, limit: int = 1_000) -> frozenset[str]:
        """The identities of the feed's newest stored items: the parse workers skip these
        entries, whose items are stored already (a changed feed repeats most of them)."""
        table = ItemRow.__table__
        with self.engine.connect() as conn:
            query = (
                select(table.c.identity)
                .where(table.c.feed == feed)
                .order_by(table.c.id.desc())
                .limit(limit)
            )
            return frozenset(conn.execute(query).scalars())

    # -- feed health notices ----------------------------------------------------------------

    def feed_notices(self) -> dict[str, str]:
        """The problem last noticed per feed (failing, silent, disabled), until it recovers."""
        with Session(self.engine) as s:
            return dict(s.execute(select(FeedNoticeRow.feed, FeedNoticeRow.flag)).all())

    def record_feed_notice(self, feed: str, flag: str, now: datetime) -> None:
        table = FeedNoticeRow.__table__
        stmt = self._insert()(table).values(feed=feed, flag=flag, noticed_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=["feed"], set_={"flag": stmt.excluded.flag, "noticed_at": now}
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def clear_feed_notice(self, feed: str) -> None:
        table = FeedNoticeRow.__table__
        with self.engine.begin() as conn:
            conn.execute(table.delete().where(table.c.feed == feed))

    def store_poll(
        self,
        feed: str,
        url: str,
        update_: FeedUpdate,
        parsed: ParsedFeed | None,
        router: Any,
        now: datetime,
    ) -> StoreResult:
        """Record a poll in one transaction: the feed's state, its new items, their
        matches and, for matching items, a pending delivery per channel the router
        names (the outbox)."""
        (result,) = self.store_polls([PollWrite(feed, url, update_, parsed, router, now)])
        if isinstance(result, Exception):
            raise result
        return result

    def store_polls(self, polls: Sequence[PollWrite]) -> list[StoreResult | Exception]:
        """Several polls in one transaction (a group commit: SQLite's cost is per commit).
        If the batch fails, each poll is retried alone so one bad write sinks only itself."""
        polls = [
            replace(p, parsed=p.parsed.load()) if isinstance(p.parsed, ParsedBlob) else p
            for p in polls
        ]
        try:
            with self.engine.begin() as conn:
                return self._store_batch(conn, polls)
        except Exception as exc:
            self._stories.clear()  # it may hold what was rolled back
            if len(polls) == 1:
                return [exc]
        results: list[StoreResult | Exception] = []
        for poll in polls:
            try:
                with self.engine.begin() as conn:
                    results += self._store_batch(conn, [poll])
            except Exception as exc:
                self._stories.clear()
                results.append(exc)
        return results

    def _store_batch(self, conn: Connection, polls: Sequence[PollWrite]) -> list[StoreResult]:
        # Core statements, not ORM objects: this runs for every feed on every poll.
        # the feeds' states in one executemany: a warm poll is mostly these
        conn.execute(self._feed_upsert(), [_feed_state_row(p) for p in polls])
        stored: list[_NewItems | None] = []
        for p in polls:
            has_items = p.parsed is not None and p.parsed.items
            stored.append(self._store_items(conn, p.feed, p.parsed, p.now) if has_items else None)
        # the batch's relevant new items go to their stories together: the open stories
        # they may join are looked up and rewritten once, not once per feed
        copies = self._assign_stories(conn, [r for new in stored if new for r in new.relevant])
        results, delivery_rows = [], []
        for p, new in zip(polls, stored, strict=True):
            if new is None:
                results.append(StoreResult())
                continue
            rows = self._deliveries(p, new, copies)
            delivery_rows += rows
            results.append(StoreResult(len(new.ids), new.matches, len(rows)))
        if delivery_rows:
            conn.execute(
                self._insert()(DeliveryRow.__table__).on_conflict_do_nothing(), delivery_rows
            )
        return results

    @functools.cache  # noqa: B019 - one statement per repository, compiled once and cached
    def _feed_upsert(self) -> Any:
        table = FeedRow.__table__
        stmt = self._insert()(table)
        mean = table.c.mean_poll_ms
        return stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={
                f: stmt.excluded[f]
                for f in ("url", "lease_until", "leased_by", *_FEED_UPDATE_FIELDS)
            }
            | {
                "title": func.coalesce(stmt.excluded.title, table.c.title),
                "polls": table.c.polls + 1,
                # a moving average: recent polls count most
                "mean_poll_ms": case(
                    (mean.is_(None), stmt.excluded.mean_poll_ms),
                    else_=0.8 * mean + 0.2 * stmt.excluded.mean_poll_ms,
                ),
            },
        )

    def _store_items(
        self, conn: Connection, feed: str, parsed: ParsedFeed, now: datetime
    ) -> _NewItems | None:
        items = parsed.items
        table = ItemRow.__table__
        # A feed that changes an item's guid on every request still links the same
        # article: an item whose canonical URL this feed already gave us is not new.
        urls = [i.url for i in items if i.url]
        known_urls: set[str] = set()
        for chunk in _chunks(urls):
            known_urls.update(conn.execute(_KNOWN_URLS, {"feed": feed, "urls": chunk}).scalars())
        rows = []
        for item in items:
            if item.url and item.url in known_urls:
                continue
            if item.url:
                known_urls.add(item.url)
            rows.append(
                {
                    "feed": feed,
                    "identity": item.identity,
                    "guid": item.guid,
                    "url": item.url,
                    "title": item.title,
                    "summary": item.summary,
                    "author": item.author,
                    "categories": list(item.categories),
                    "language": item.language,
                    "published": item.published,
                    "first_seen": now,
                }
            )
        if not rows:
            return None
        # executemany of one cached statement: ~5x faster than a multi-row VALUES
        # compiled afresh for every batch. RETURNING gives exactly the new rows.
        stmt = (
            self._insert()(table)
            .on_conflict_do_nothing(index_elements=["feed", "identity"])
            .returning(table.c.id, table.c.identity)
        )
        new_ids = {identity: id_ for id_, identity in conn.execute(stmt, rows)}
        match_rows = []
        for identity, item_id in new_ids.items():
            match_rows += [_match_row(item_id, m) for m in parsed.matches.get(identity, ())]
        if match_rows:
            conn.execute(self._insert()(MatchRow.__table__).on_conflict_do_nothing(), match_rows)
        by_identity = {i.identity: i for i in items}
        relevant = [
            _Relevant(item_id, by_identity[identity], parsed.matches[identity], now,
                      parsed.signatures.get(identity))
            for identity, item_id in new_ids.items() if parsed.matches.get(identity)
        ]  # fmt: skip
        return _NewItems(new_ids, len(match_rows), relevant)

    @staticmethod
    def _deliveries(p: PollWrite, new: _NewItems, copies: set[int]) -> list[dict[str, Any]]:
        """A pending delivery (the outbox) per channel the router names for each matching
        new item, but for syndicated copies of a story already alerted: counted, not sent."""
        if not p.router:
            return []
        return [
            {"item_id": r.item_id, "channel": channel, "status": "pending", "attempts": 0,
             "next_attempt": p.now, "created": p.now}
            for r in new.relevant if r.item_id not in copies
            for channel in p.router.channels(p.feed, r.matches)
        ]  # fmt: skip

    # -- stories -----------------------------------------------------------------------------

    def _assign_stories(self, conn: Connection, entries: Sequence[_Relevant]) -> set[int]:
        """Put new relevant items in their stories (an open one they report, or a new one),
        with a few statements per batch of polls, not per item. Returns the items that are
        exact copies (same link or title) of a story's item: counted, never alerted."""
        if not entries:
            return set()
        rules = self.story_rules
        kt, st = StoryKeyRow.__table__, StoryRow.__table__
        prepared = []
        for item_id, item, matches, now, sig in entries:
            sig = (sig or story_rules.signature(item, matches, self.gate)).interned()
            keys = {k[:500] for k in story_rules.keys(sig)}  # the column's length
            prepared.append((item_id, item, matches, now, sig, keys))
        # every open story that shares a key with any of the items, in one query, but for
        # the keys too many of them share: those tell no story apart
        earliest = min(now for _, _, _, now, *_ in prepared)
        common = self._recent_common_keys(earliest)
        by_key: dict[str, set[int]] = {}
        all_keys = sorted({k for *_, keys in prepared for k in keys} - common)
        since = earliest - rules.window
        for chunk in _chunks(all_keys):
            for key, count, ids in conn.execute(_OPEN_STORY_KEYS, {"keys": chunk, "since": since}):
                if count > _STORY_KEY_SPREAD:
                    common.add(key)
                    self._common_keys[key] = earliest
                else:
                    by_key[key] = set(map(int, ids.split(",")))

        # the open stories sharing the most keys with an item: a name or word every story
        # has (a big studio, "games") must not make each new item read hundreds of stories
        def ranked(keys: set[str]) -> list[int]:
            shared: Counter[int] = Counter()
            for k in keys:
                if k not in common:
                    shared.update(by_key.get(k, ()))
            best = heapq.nlargest(_STORY_CANDIDATES, shared.items(), key=lambda kv: kv[::-1])
            return [sid for sid, _ in best]

        # the candidates, changed in memory; read in one go, not per item
        stories = self._load_stories(conn, {sid for *_, keys in prepared for sid in ranked(keys)})
        copies: set[int] = set()
        key_rows: list[dict[str, Any]] = []
        member_rows: list[dict[str, Any]] = []
        for item_id, item, matches, now, sig, keys in prepared:
            # ranked again: the stories this poll created or grew count too
            candidate_ids = ranked(keys)
            if missing := {sid for sid in candidate_ids if sid not in stories}:
                stories.update(self._load_stories(conn, missing))
            opened_since = now - rules.window  # the batch read back from its earliest poll
            candidates = [
                (sid, parsed)
                for sid in candidate_ids
                if sid in stories and stories[sid].first_seen >= opened_since
                for parsed in stories[sid].parsed
            ]  # fmt: skip
            found = story_rules.best_story(sig, candidates, rules)
            topics = sorted(m.topic for m in matches)
            if found is None:
                story = _OpenStory(
                    1, [item.feed], [item.language] if item.language else [], topics, now, now,
                    [sig.kept()],
                )  # fmt: skip
                sid = conn.execute(
                    insert(st).returning(st.c.id),
                    {"lead_item_id": item_id, "title": item.title[:500], **story.row()},
                ).scalar_one()
                stories[sid] = self._stories[sid] = story
                reason, exact, new_keys = "first report", False, keys
            else:
                sid, reason, exact = found
                story = stories[sid]
                story.items += 1
                story.dirty = True
                story.last_seen = max(story.last_seen, now)
                if item.feed not in story.outlets:
                    story.outlets.append(item.feed)
                if item.language and item.language not in story.languages:
                    story.languages.append(item.language)
                story.topics = sorted(set(story.topics) | set(topics))
                new_keys = set()
                if not exact and len(story.parsed) < _STORY_SIGNATURES:
                    story.parsed.append(sig.kept())
                    story.new_members = True
                    new_keys = keys
            for k in new_keys:
                by_key.setdefault(k, set()).add(sid)
                key_rows.append({"key": k, "story_id": sid,
                                 "first_seen": stories[sid].first_seen})  # fmt: skip
            member_rows.append({"item_id": item_id, "story_id": sid, "reason": reason,
                                "exact": exact})  # fmt: skip
            if exact:
                copies.add(item_id)
        # grown stories, their signatures written only when a member was added (they are
        # most of a story's row: an exact copy or an eleventh member leaves them as they are)
        grown: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        for sid, story in stories.items():
            if story.dirty:
                story.dirty = False
                grown[story.new_members].append(
                    {"sid": sid, **story.row(signatures=story.new_members)}
                )
                story.new_members = False
        for rows in grown.values():
            if rows:
                values = {c: bindparam(c) for c in rows[0] if c not in ("sid", "first_seen")}
                conn.execute(update(st).where(st.c.id == bindparam("sid")).values(values), rows)
        if key_rows:
            conn.execute(self._insert()(kt).on_conflict_do_nothing(), key_rows)
        conn.execute(self._insert()(StoryItemRow.__table__).on_conflict_do_nothing(), member_rows)
        return copies

    def _recent_common_keys(self, now: datetime) -> set[str]:
        """The keys found common within _COMMON_KEYS_KEPT (the others forgotten): a key
        shared by more than _STORY_KEY_SPREAD open stories stays so for a while, until
        enough of them close."""
        since = now - _COMMON_KEYS_KEPT
        self._common_keys = {k: t for k, t in self._common_keys.items() if t >= since}
        return set(self._common_keys)

    def _load_stories(self, conn: Connection, ids: set[int]) -> dict[int, _OpenStory]:
        """The stories `ids`, from the cache where the row has not changed since."""
        out: dict[int, _OpenStory] = {}
        stale = []
        for chunk in _chunks(sorted(ids)):
            for sid, items, last_seen in conn.execute(_STORY_VERSIONS, {"ids": chunk}):
                cached = self._stories.pop(sid, None)
                if cached and (cached.items, cached.last_seen) == (items, last_seen):
                    out[sid] = self._stories[sid] = cached  # the most recently used last
                else:
                    stale.append(sid)
        over = max(0, len(self._stories) + len(stale) - _STORY_CACHE)
        for sid in list(itertools.islice(self._stories, over)):
            del self._stories[sid]  # the least recently used
        for chunk in _chunks(stale):
            for row in conn.execute(_STORIES, {"ids": chunk}):
                out[row.id] = self._stories[row.id] = _OpenStory(
                    row.items, list(row.outlets), list(row.languages), list(row.topics),
                    row.first_seen, row.last_seen,
                    [story_rules.Signature.from_json(d) for d in row.signatures],
                )  # fmt: skip
        return out

    def story_of(self, item_ids: Sequence[int]) -> dict[int, StoryInfo]:
        """For items in a story: the story, whether the item leads it, and its coverage."""
        out: dict[int, StoryInfo] = {}
        st = StoryRow.__table__
        with self.engine.connect() as conn:
            for chunk in _chunks(list(item_ids)):
                # not the signatures: they are large, and only storing compares them
                q = (
                    select(StoryItemRow.item_id, st.c.id, st.c.lead_item_id, st.c.outlets,
                           st.c["items"])
                    .join(st, st.c.id == StoryItemRow.story_id)
                    .where(StoryItemRow.item_id.in_(chunk))
                )  # fmt: skip
                for item_id, sid, lead, outlets, count in conn.execute(q):
                    out[item_id] = StoryInfo(sid, lead, lead == item_id, tuple(outlets), count)
        return out

    def story_message(self, story_id: int, channel: str) -> tuple[str, str] | None:
        """(channel id, ts) of the message a story's alert became in a channel."""
        with Session(self.engine) as s:
            row = s.get(StoryMessageRow, (story_id, channel))
            return (row.channel_id, row.ts) if row else None

    def save_story_message(self, story_id: int, channel: str, channel_id: str, ts: str) -> None:
        stmt = self._insert()(StoryMessageRow.__table__).values(
            story_id=story_id, channel=channel, channel_id=channel_id, ts=ts
        )
        with self.engine.begin() as conn:
            conn.execute(stmt.on_conflict_do_nothing())

    def delivery_status(self, item_id: int, channel: str) -> str | None:
        with Session(self.engine) as s:
            return s.execute(
                select(DeliveryRow.status).where(
                    DeliveryRow.item_id == item_id, DeliveryRow.channel == channel
                )
            ).scalar()

    def list_stories(self, since: datetime, limit: int | None = 200) -> list[StoryRecord]:
        with Session(self.engine) as s:
            q = select(StoryRow).where(StoryRow.first_seen >= since)
            q = q.order_by(StoryRow.items.desc(), StoryRow.first_seen.desc())
            if limit is not None:
                q = q.limit(limit)
            stories = list(s.execute(q).scalars())
            members: dict[int, list[int]] = {}
            for chunk in _chunks([st.id for st in stories]):
                for item_id, story_id in s.execute(
                    select(StoryItemRow.item_id, StoryItemRow.story_id)
                    .where(StoryItemRow.story_id.in_(chunk))
                    .order_by(StoryItemRow.item_id)
                ):
                    members.setdefault(story_id, []).append(item_id)
            return [
                StoryRecord(st.id, st.title, tuple(members.get(st.id, ())), tuple(st.outlets),
                            tuple(st.languages), st.first_seen, st.last_seen, tuple(st.topics))
                for st in stories
            ]  # fmt: skip

    # -- items -------------------------------------------------------------------------------

    def list_items(
        self,
        *,
        since: datetime | None = None,
        topic: str | None = None,
        feed: str | None = None,
        limit: int | None = 100,
    ) -> list[StoredItem]:
        with Session(self.engine) as s:
            q = select(ItemRow).order_by(ItemRow.published.desc(), ItemRow.id.desc())
            if since is not None:
                q = q.where(ItemRow.published >= since)
            if feed is not None:
                q = q.where(ItemRow.feed == feed)
            if topic is not None:
                q = q.where(ItemRow.id.in_(select(MatchRow.item_id).where(MatchRow.topic == topic)))
            if limit is not None:
                q = q.limit(limit)
            rows = list(s.execute(q).scalars())
            return self._with_matches(s, rows)

    def stored_items(self, ids: Sequence[int]) -> dict[int, StoredItem]:
        with Session(self.engine) as s:
            rows = []
            for chunk in _chunks(list(ids)):
                rows += list(s.execute(select(ItemRow).where(ItemRow.id.in_(chunk))).scalars())
            return {si.id: si for si in self._with_matches(s, rows)}

    def mark_deliveries_merged(self, delivery_ids: Sequence[int], now: datetime) -> None:
        """Later reports of stories where Slack cannot thread (webhook, console): their
        story's alert stands for them; nothing is sent, so they are marked together."""
        if delivery_ids:
            with self.engine.begin() as conn:
                conn.execute(_MARK_MERGED, [{"did": d, "now": now} for d in delivery_ids])

    def _with_matches(self, s: Session | Connection, rows: Sequence[Any]) -> list[StoredItem]:
        """Items (ItemRows, or rows of the items table's columns) with their matches."""
        by_item: dict[int, list[Match]] = {}
        ids = [r.id for r in rows]
        for chunk in _chunks(ids):
            for item_id, topic, terms, score, positions in s.execute(_MATCHES, {"ids": chunk}):
                by_item.setdefault(item_id, []).append(
                    Match(topic, tuple(terms), score, tuple(map(tuple, positions or ())))
                )
        return [
            StoredItem(r.id, _to_item(r), r.first_seen, tuple(by_item.get(r.id, ()))) for r in rows
        ]

    def replace_matches(self, changes: dict[int, tuple[Match, ...]]) -> None:
        """Store new matches for items after the topics changed (reclassify)."""
        table = MatchRow.__table__
        with self.engine.begin() as conn:
            ids = list(changes)
            for chunk in _chunks(ids):
                conn.execute(table.delete().where(table.c.item_id.in_(chunk)))
            rows = [_match_row(item_id, m) for item_id, ms in changes.items() for m in ms]
            if rows:
                conn.execute(self._insert()(table), rows)

    def add_deliveries(self, targets: Sequence[tuple[int, str]], now: datetime) -> int:
        """Queue alerts for stored items, (item id, channel) each; one already queued is skipped."""
        rows = [
            {"item_id": i, "channel": channel, "status": "pending", "attempts": 0,
             "next_attempt": now, "created": now}
            for i, channel in targets
        ]  # fmt: skip
        if not rows:
            return 0
        table = DeliveryRow.__table__
        stmt = self._insert()(table).on_conflict_do_nothing().returning(table.c.id)
        with self.engine.begin() as conn:
            return len(list(conn.execute(stmt, rows)))

    def feed_activity(self, since: datetime, recent: datetime) -> dict[str, FeedActivity]:
        """Per feed: new items since `since` and since `recent`, matched items since `recent`,
        and when it last gave a new item."""
        with Session(self.engine) as s:
            rows = s.execute(
                select(
                    ItemRow.feed,
                    func.count(),
                    func.sum(case((ItemRow.first_seen >= recent, 1), else_=0)),
                    func.max(ItemRow.first_seen),
                )
                .where(ItemRow.first_seen >= since)
                .group_by(ItemRow.feed)
            ).all()
            matched = dict(
                s.execute(
                    select(ItemRow.feed, func.count(func.distinct(ItemRow.id)))
                    .join(MatchRow, MatchRow.item_id == ItemRow.id)
                    .where(ItemRow.first_seen >= recent)
                    .group_by(ItemRow.feed)
                ).all()
            )
            last_any = dict(
                s.execute(
                    select(ItemRow.feed, func.max(ItemRow.first_seen)).group_by(ItemRow.feed)
                ).all()
            )
        out = {
            feed: FeedActivity(n, int(n_recent or 0), matched.get(feed, 0), last_any.get(feed))
            for feed, n, n_recent, _ in rows
        }
        for feed, last in last_any.items():
            out.setdefault(feed, FeedActivity(0, 0, 0, last))
        return out

    def count_items(self, feed: str | None = None) -> int:
        with Session(self.engine) as s:
            q = select(func.count()).select_from(ItemRow)
            if feed:
                q = q.where(ItemRow.feed == feed)
            return s.execute(q).scalar_one()

    # -- deliveries (the outbox) -------------------------------------------------------------

    def pending_deliveries(
        self, now: datetime, limit: int = 100, *, worker: str | None = None
    ) -> list[PendingDelivery]:
        """Due deliveries, claimed for `DELIVERY_LEASE` so that no other worker sends them
        (FOR UPDATE SKIP LOCKED on PostgreSQL); a sender that dies lets the claim run out."""
        # a claim of its own, not just the worker's name: two dispatch passes of one
        # process (a long one and the next) must not take each other's for their own
        claim = f"{worker or _WORKER}/{secrets.token_hex(4)}"
        table = DeliveryRow.__table__
        with self.engine.begin() as conn:
            due = (
                select(table.c.id)
                .where(
                    table.c.status == "pending",
                    table.c.next_attempt <= now,
                    (table.c.lease_until.is_(None)) | (table.c.lease_until < now),
                )
                .order_by(table.c.next_attempt, table.c.id)
                .limit(limit)
            )
            ids = _claim(conn, table.c.id, due, now + DELIVERY_LEASE, claim)
        if not ids:
            return []
        # rows, not ORM objects: a first poll's dispatch reads thousands
        with self.engine.connect() as conn:
            rows = conn.execute(_DUE_DELIVERIES, {"ids": ids}).all()
            stored = {si.id: si for si in self._with_matches(conn, rows)}
        return [
            PendingDelivery(r.delivery_id, r.channel, r.attempts, stored[r.id], claim) for r in rows
        ]

    def hold_deliveries(self, deliveries: Sequence[PendingDelivery], now: datetime) -> set[int]:
        """The deliveries still claimed as they were taken, their claim renewed for another
        DELIVERY_LEASE: to ask right before sending. A pass that outlasted its claim (a slow
        Slack, many follow-ups at a message a second) may have lost some to another
        worker, which sends them: this one must not as well."""
        table = DeliveryRow.__table__
        until = max(now, datetime.now(UTC)) + DELIVERY_LEASE  # the claim is wall-clock time
        held: set[int] = set()
        by_claim: dict[str, list[int]] = {}
        for d in deliveries:
            by_claim.setdefault(d.claim, []).append(d.id)
        with self.engine.begin() as conn:
            for claim, ids in by_claim.items():
                stmt = (
                    update(table)
                    .where(table.c.id.in_(ids), table.c.status == "pending",
                           table.c.leased_by == claim)
                    .values(lease_until=until)
                    .returning(table.c.id)
                )  # fmt: skip
                held.update(conn.execute(stmt).scalars())
        return held

    def mark_delivery_sent(self, delivery_id: int, now: datetime) -> None:
        self._update_delivery(_MARK_SENT, {"did": delivery_id, "now": now})

    def mark_delivery_retry(self, delivery_id: int, error: str, next_attempt: datetime) -> None:
        self._update_delivery(
            _MARK_RETRY, {"did": delivery_id, "error": error[:1000], "next": next_attempt}
        )

    def mark_delivery_failed(self, delivery_id: int, error: str) -> None:
        self._update_delivery(_MARK_FAILED, {"did": delivery_id, "error": error[:1000]})

    def retry_failed_deliveries(
        self, ids: Sequence[int] | None, now: datetime, *, channel: str | None = None
    ) -> int:
        """Failed deliveries (these ids, or all) pending again, due now: the person fixed
        what Slack refused (token, channel, invitation), or names the channel they should
        have gone to (an item already owed to that channel is left failed). How many."""
        d = DeliveryRow.__table__
        values: dict[str, Any] = {"status": "pending", "next_attempt": now,
                                  "lease_until": None, "leased_by": None}  # fmt: skip

        def chosen(t: Any) -> Any:
            failed = t.c.status == "failed"
            return failed if ids is None else and_(failed, t.c.id.in_(list(ids)))

        stmt = update(d).where(chosen(d))
        if channel is not None:
            values["channel"] = channel
            other = d.alias("other")
            stmt = stmt.where(
                ~select(other.c.id)
                .where(other.c.item_id == d.c.item_id, other.c.channel == channel)
                .exists(),
                # one delivery of an item that failed in several channels: the others
                # stay failed (the item is owed to the new channel once)
                d.c.id
                == select(func.min(other.c.id))
                .where(other.c.item_id == d.c.item_id, chosen(other))
                .scalar_subquery(),
            )
        stmt = stmt.values(**values)
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount or 0

    def _update_delivery(self, stmt: Any, params: dict[str, Any]) -> None:
        # a transaction per delivery: marked the moment Slack has it, whatever comes next
        with self.engine.begin() as conn:
            conn.execute(stmt, params)

    def release_leases(self) -> None:
        """The one `run` on this database starts: no one else holds feeds or deliveries."""
        with self.engine.begin() as conn:
            conn.execute(update(FeedRow).values(lease_until=None, leased_by=None))
            conn.execute(
                update(DeliveryRow)
                .where(DeliveryRow.lease_until.is_not(None))
                .values(lease_until=None, leased_by=None)
            )

    # -- several workers ---------------------------------------------------------------------

    def ensure_feeds(self, feeds: Sequence[tuple[str, str]]) -> None:
        """A row for every configured feed (name, url): workers claim feeds from the table."""
        rows = [{"name": n, "url": u, "consecutive_failures": 0, "disabled": False,
                 "polls": 0} for n, u in feeds]  # fmt: skip
        if rows:
            with self.engine.begin() as conn:
                conn.execute(self._insert()(FeedRow.__table__).on_conflict_do_nothing(), rows)

    def claim_due_feeds(
        self, names: Sequence[str], now: datetime, lease: timedelta, limit: int,
        worker: str | None = None,
    ) -> list[str]:  # fmt: skip
        """Take up to `limit` due feeds among `names` for this worker until now + lease:
        one worker per feed (FOR UPDATE SKIP LOCKED), taken again if the lease runs out."""
        if not names or limit <= 0:
            return []
        table = FeedRow.__table__
        with self.engine.begin() as conn:
            due = (
                select(table.c.name)
                .where(
                    table.c.name.in_(list(names)),
                    table.c.disabled.is_(False),
                    (table.c.next_poll.is_(None)) | (table.c.next_poll <= now),
                    (table.c.lease_until.is_(None)) | (table.c.lease_until < now),
                )
                .order_by(table.c.next_poll.is_not(None), table.c.next_poll, table.c.name)
                .limit(limit)
            )
            return _claim(conn, table.c.name, due, now + lease, worker or _WORKER)

    def deliveries(self, status: str | None = None, limit: int = 1000) -> list[DeliveryRecord]:
        with Session(self.engine) as s:
            q = (
                select(DeliveryRow, ItemRow.feed, ItemRow.title)
                .join(ItemRow, ItemRow.id == DeliveryRow.item_id)
                .order_by(DeliveryRow.id.desc())
                .limit(limit)
            )
            if status is not None:
                q = q.where(DeliveryRow.status == status)
            return [
                DeliveryRecord(
                    d.id,
                    d.item_id,
                    d.channel,
                    d.status,
                    d.attempts,
                    d.last_error,
                    d.next_attempt,
                    d.sent_at,
                    feed,
                    title,
                )
                for d, feed, title in s.execute(q)
            ]

    def delivery_counts(self) -> dict[str, int]:
        with Session(self.engine) as s:
            q = select(DeliveryRow.status, func.count()).group_by(DeliveryRow.status)
            return {status: n for status, n in s.execute(q)}

    # -- digests -----------------------------------------------------------------------------

    def items_seen_between(
        self, start: datetime, end: datetime, topics: Iterable[str] | None = None
    ) -> list[StoredItem]:
        """Items first seen in [start, end) with a match (in one of `topics`, when given)."""
        wanted = select(MatchRow.item_id)
        if topics is not None:
            wanted = wanted.where(MatchRow.topic.in_(list(topics)))
        with Session(self.engine) as s:
            rows = list(
                s.execute(
                    select(ItemRow)
                    .where(ItemRow.first_seen >= start, ItemRow.first_seen < end)
                    .where(ItemRow.id.in_(wanted))
                    .order_by(ItemRow.first_seen, ItemRow.id)
                ).scalars()
            )
            return self._with_matches(s, rows)

    def topic_counts(self, start: datetime, end: datetime) -> dict[str, int]:
        """Items first seen in [start, end) per matched topic."""
        with Session(self.engine) as s:
            q = (
                select(MatchRow.topic, func.count(func.distinct(ItemRow.id)))
                .join(ItemRow, ItemRow.id == MatchRow.item_id)
                .where(ItemRow.first_seen >= start, ItemRow.first_seen < end)
                .group_by(MatchRow.topic)
            )
            return {topic: n for topic, n in s.execute(q)}

    def first_item_seen(self) -> datetime | None:
        """When the service stored its first item: no digest is owed for earlier periods."""
        with Session(self.engine) as s:
            return s.execute(select(func.min(ItemRow.first_seen))).scalar()

    def digest_record(self, name: str, period_start: datetime) -> DigestRecord | None:
        with Session(self.engine) as s:
            row = s.execute(
                select(DigestRow).where(
                    DigestRow.name == name, DigestRow.period_start == period_start
                )
            ).scalar()
            return _to_digest(row) if row else None

    def owed_digests(self, name: str, now: datetime) -> list[DigestRecord]:
        """Every period of a digest that claim_digest would take now (a retry that is due,
        a send cut off an hour ago), oldest first, however many periods came after it."""
        with Session(self.engine) as s:
            q = (
                select(DigestRow)
                .where(DigestRow.name == name, _digest_takeable(now))
                .order_by(DigestRow.period_start)
            )
            return [_to_digest(r) for r in s.execute(q).scalars()]

    def claim_digest(
        self, name: str, start: datetime, end: datetime, now: datetime, *, force: bool = False
    ) -> DigestRecord | None:
        """Take a digest period for sending: a new period, one due for a retry, or with
        force any but one another worker is sending. None when it is not to be sent
        (sent, failed, or another worker has it)."""
        table = DigestRow.__table__
        with self.engine.begin() as conn:
            inserted = conn.execute(
                self._insert()(table)
                .values(name=name, period_start=start, period_end=end, status="sending",
                        attempts=0, items=0, pending=[], updated=now)
                .on_conflict_do_nothing()
                .returning(table.c.id)
            ).first()  # fmt: skip
            if inserted is None:
                cond = and_(table.c.name == name, table.c.period_start == start)
                if not force:
                    cond = and_(cond, _digest_takeable(now))
                else:  # not a send under way in another process: both would send it
                    stale = table.c.updated <= now - _STALE_SENDING
                    cond = and_(cond, or_(table.c.status != "sending", stale))
                taken = conn.execute(
                    update(table).where(cond).values(status="sending", updated=now)
                ).rowcount
                if not taken:
                    return None
        return self.digest_record(name, start)

    def finish_digest(
        self,
        name: str,
        start: datetime,
        *,
        status: str,
        now: datetime,
        items: int = 0,
        pending: Sequence[str] = (),
        error: str | None = None,
        next_attempt: datetime | None = None,
        sent_at: datetime | None = None,  # when it was sent, if not now
    ) -> None:
        table = DigestRow.__table__
        with self.engine.begin() as conn:
            conn.execute(
                update(table)
                .where(table.c.name == name, table.c.period_start == start)
                .values(
                    status=status, attempts=table.c.attempts + 1, items=items,
                    pending=list(pending), last_error=error[:1000] if error else None,
                    next_attempt=next_attempt, updated=now,
                    sent_at=(sent_at or now) if status == "sent" else table.c.sent_at,
                )
            )  # fmt: skip

    # -- heartbeat ---------------------------------------------------------------------------

    def write_heartbeat(self, name: str, now: datetime) -> None:
        # an upsert: several workers starting at once write the same heartbeat
        values = {"name": name, "at": now, "pid": os.getpid(), "host": socket.gethostname()}
        stmt = self._insert()(HeartbeatRow.__table__).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={k: stmt.excluded[k] for k in ("at", "pid", "host")},
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    # -- the feeds.yaml applied --------------------------------------------------------------

    def save_applied_config(self, path: str, text: str, now: datetime) -> None:
        """Keep the text of feeds.yaml `run` applied (read back by applied_config)."""
        table = AppliedConfigRow.__table__
        stmt = self._insert()(table).values(path=path, text=text, applied_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=["path"], set_={"text": stmt.excluded.text, "applied_at": now},
            where=table.c.text != stmt.excluded.text,  # the time it was first applied
        )  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def applied_config(self, path: str) -> tuple[str, datetime] | None:
        """The feeds.yaml text last applied from `path`, and since when."""
        with Session(self.engine) as s:
            row = s.get(AppliedConfigRow, path)
            return (row.text, row.applied_at) if row else None

    # -- maintenance -------------------------------------------------------------------------

    def prune(self, now: datetime, story_window: timedelta) -> dict[str, int]:
        """Delete what nothing reads any more, so months of running do not pile it up:
        the index keys of stories closed a day past their window (a new item is only
        compared with open stories), and the heartbeats of workers gone for a week (a
        row per worker process ever started). Items, stories and deliveries stay: they
        are the archive the commands and digests read."""
        keys, beats = StoryKeyRow.__table__, HeartbeatRow.__table__
        with self.engine.begin() as conn:
            closed = conn.execute(
                delete(keys).where(keys.c.first_seen < now - story_window - timedelta(days=1))
            ).rowcount
            gone = conn.execute(
                delete(beats).where(
                    beats.c.name.like("worker:%"), beats.c.at < now - timedelta(days=7)
                )
            ).rowcount
        return {"story_keys": closed or 0, "heartbeats": gone or 0}

    def heartbeat(self, name: str) -> datetime | None:
        with Session(self.engine) as s:
            row = s.get(HeartbeatRow, name)
            return row.at if row else None


@dataclass(slots=True)
class _OpenStory:
    """An open story as storage compares and grows it in memory (its row, parsed)."""

    items: int
    outlets: list[str]
    languages: list[str]
    topics: list[str]
    first_seen: datetime
    last_seen: datetime
    parsed: list[story_rules.Signature]  # the members' signatures new items are compared with
    dirty: bool = False  # grown in memory, not written yet
    new_members: bool = False  # and a signature added to parsed

    def row(self, *, signatures: bool = True) -> dict[str, Any]:
        """Its columns in the stories table (without the signatures when not asked)."""
        row = {
            "items": self.items, "outlets": self.outlets, "languages": self.languages,
            "topics": self.topics, "first_seen": self.first_seen, "last_seen": self.last_seen,
        }  # fmt: skip
        if signatures:
            row["signatures"] = [sig.to_json() for sig in self.parsed]
        return row


def _claim(conn: Connection, key: Any, due: Any, until: datetime, worker: str) -> list[Any]:
    """Lease the rows `due` selects to `worker` until `until`: rows another worker is
    claiming at this moment are skipped (FOR UPDATE SKIP LOCKED; SQLite has one writer)."""
    ids = list(conn.execute(due.with_for_update(skip_locked=True)).scalars())
    if ids:
        conn.execute(
            update(key.table).where(key.in_(ids)).values(lease_until=until, leased_by=worker)
        )
    return ids


# The statements every poll runs, built once: building one costs more than running it.
_items_t, _keys_t, _stories_t = ItemRow.__table__, StoryKeyRow.__table__, StoryRow.__table__
_FEED_STATES = select(*(FeedRow.__table__.c[f] for f in FeedState.__dataclass_fields__))
_KNOWN_URLS = select(_items_t.c.url).where(
    _items_t.c.feed == bindparam("feed"), _items_t.c.url.in_(bindparam("urls", expanding=True))
)
# a row per key, its open stories' ids joined by commas: at 10,000 feeds a batch's keys
# name ~16,000 (key, story) pairs, and a row costs more to fetch than to split
_OPEN_STORY_KEYS = (
    select(
        _keys_t.c.key,
        func.count(),
        func.aggregate_strings(cast(_keys_t.c.story_id, Text), ","),
    )
    .where(
        _keys_t.c.key.in_(bindparam("keys", expanding=True)),
        _keys_t.c.first_seen >= bindparam("since"),
    )
    .group_by(_keys_t.c.key)
)
_STORY_VERSIONS = select(_stories_t.c.id, _stories_t.c["items"], _stories_t.c.last_seen).where(
    _stories_t.c.id.in_(bindparam("ids", expanding=True))
)
_STORIES = select(_stories_t).where(_stories_t.c.id.in_(bindparam("ids", expanding=True)))
_matches_t = MatchRow.__table__
_MATCHES = select(
    _matches_t.c.item_id, _matches_t.c.topic, _matches_t.c.terms, _matches_t.c.score,
    _matches_t.c.positions,
).where(_matches_t.c.item_id.in_(bindparam("ids", expanding=True)))  # fmt: skip
_items_t, _deliveries_t = ItemRow.__table__, DeliveryRow.__table__
_DUE_DELIVERIES = (
    select(
        _deliveries_t.c.id.label("delivery_id"),
        _deliveries_t.c.channel,
        _deliveries_t.c.attempts,
        *_items_t.c,
    )
    .join(_items_t, _items_t.c.id == _deliveries_t.c.item_id)
    .where(_deliveries_t.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_deliveries_t.c.next_attempt, _deliveries_t.c.id)
)


def _delivery_update(**values: Any) -> Any:
    """A pending delivery's outcome (bound as `did`); it gives up its claim with it."""
    d = DeliveryRow.__table__
    return (
        update(d)
        .where(d.c.id == bindparam("did"), d.c.status == "pending")
        .values(**values, lease_until=None, leased_by=None)
    )


_attempted = DeliveryRow.__table__.c.attempts + 1
_MARK_SENT = _delivery_update(
    status="sent", sent_at=bindparam("now"), last_error=None, attempts=_attempted
)
_MARK_MERGED = _delivery_update(status="merged", sent_at=bindparam("now"), last_error=None)
_MARK_RETRY = _delivery_update(
    last_error=bindparam("error"), next_attempt=bindparam("next"), attempts=_attempted
)
_MARK_FAILED = _delivery_update(status="failed", last_error=bindparam("error"), attempts=_attempted)


def _chunks(seq: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]
