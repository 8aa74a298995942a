"""What storage takes and gives: plain values, no SQL. The service's process imports
these without sqlalchemy (storage.remote runs the Repository in a process of its own)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from monitor.types import FeedUpdate, Item, Match, ParsedBlob, ParsedFeed

DELIVERY_LEASE = timedelta(minutes=2)  # a claimed delivery is sent well within this


class DatabaseLockedError(Exception):
    """Another `reelwatch run` holds the database."""


class StorageError(Exception):
    """A database error from the storage process (storage.remote), in words: the
    driver's own exception types stay in that process."""


@dataclass(frozen=True, slots=True)
class SchemaUpgrade:
    """What create_schema did (it comes back to the service's process, which must
    not import storage.migrate to read it: that is sqlalchemy and sqlmodel)."""

    before: str | None  # None: no revision yet (an empty database, or one predating them)
    after: str
    predates_migrations: bool = False  # tables made by create_all before migrations existed

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass(frozen=True, slots=True)
class StoreResult:
    new_items: int = 0
    new_matches: int = 0
    new_deliveries: int = 0


@dataclass(frozen=True, slots=True)
class FeedActivity:
    items_window: int  # new items in the long window (for the feed's usual rhythm)
    items_recent: int
    matched_recent: int
    last_new_item: datetime | None


@dataclass(frozen=True, slots=True)
class PollWrite:
    """Everything one poll stores."""

    feed: str
    url: str
    update: FeedUpdate
    parsed: ParsedFeed | ParsedBlob | None  # a blob: unpickled by storage
    router: Any  # alerts.routing.Router: which channels a matching item alerts (None: none)
    now: datetime


@dataclass(frozen=True, slots=True)
class StoredItem:
    id: int
    item: Item
    first_seen: datetime
    matches: tuple[Match, ...]


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: int
    item_id: int
    channel: str
    status: str
    attempts: int
    last_error: str | None
    next_attempt: datetime
    sent_at: datetime | None
    feed: str = ""
    title: str = ""


@dataclass(frozen=True, slots=True)
class DigestRecord:
    name: str
    period_start: datetime
    period_end: datetime
    status: str  # sending | retry | sent | failed
    attempts: int
    items: int
    pending: tuple[str, ...]
    last_error: str | None
    next_attempt: datetime | None
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class StoryInfo:
    story_id: int
    lead_item_id: int
    is_lead: bool
    outlets: tuple[str, ...]
    items: int


@dataclass(frozen=True, slots=True)
class StoryRecord:
    id: int
    title: str
    items: tuple[int, ...]
    outlets: tuple[str, ...]
    languages: tuple[str, ...]
    first_seen: datetime
    last_seen: datetime
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PendingDelivery:
    id: int
    channel: str
    attempts: int
    stored: StoredItem
    claim: str = ""  # the claim it was taken under (see Repository.hold_deliveries)
