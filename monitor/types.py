"""Domain types: what feeds said and what we decided, apart from the ORM tables.

Frozen, slotted and picklable: items cross from the parse process pool to the
event loop, and pure functions take and return them so they are tested without
a database.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Item:
    """One entry of a feed, normalised."""

    feed: str
    identity: str  # guid, else link, else a hash of title and date: unique within a feed
    guid: str | None
    url: str | None  # canonical: tracking parameters and fragment removed
    title: str
    summary: str
    published: datetime  # always UTC; the first-seen time when absent or absurd
    language: str | None  # ISO 639-1
    author: str | None = None
    categories: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Match:
    """An item matched a topic: which terms made it match, and how strongly."""

    topic: str
    terms: tuple[str, ...]
    score: float
    # where each term was first found: (term, field, character offset in that field)
    positions: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    title: str | None
    language: str | None
    items: tuple[Item, ...]
    matches: dict[str, tuple[Match, ...]] = field(default_factory=dict)  # by item identity
    warning: str | None = None  # the document was repaired (not well-formed XML)
    # monitor.stories.Signature of each matching item, by identity: worked out by the
    # parse workers, beside the matches, so storage only compares them
    signatures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ParsedBlob:
    """A ParsedFeed as the parse worker pickled it. The service's process reads only its
    title and warning and hands the items to storage unread: storage unpickles them in
    its own process (storage.remote), once, instead of the service and storage both."""

    title: str | None
    warning: str | None
    data: bytes

    @classmethod
    def of(cls, parsed: ParsedFeed) -> ParsedBlob:
        return cls(parsed.title, parsed.warning, pickle.dumps(parsed, pickle.HIGHEST_PROTOCOL))

    def load(self) -> ParsedFeed:
        parsed: ParsedFeed = pickle.loads(self.data)
        return parsed


@dataclass(frozen=True, slots=True)
class Fetched:
    """What one HTTP fetch returned. body is None when the server said 304."""

    status: int
    url: str  # the final URL after redirects
    body: bytes | None
    headers: dict[str, str]
    etag: str | None
    last_modified: str | None
    elapsed_ms: int


@dataclass(frozen=True, slots=True)
class FeedState:
    """What storage remembers about a feed between polls."""

    name: str
    url: str
    etag: str | None = None
    last_modified: str | None = None
    last_status: str | None = None  # ok | unchanged | failed | gone
    last_http_status: int | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    next_poll: datetime | None = None
    disabled: bool = False
    title: str | None = None
    warning: str | None = None
    polls: int = 0
    mean_poll_ms: float | None = None


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What happened when one feed was polled, before anything is decided."""

    kind: str  # ok | unchanged | failed
    elapsed_ms: int
    http_status: int | None = None
    error: str | None = None
    warning: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    retry_after: float | None = None
    gone: bool = False
    title: str | None = None


@dataclass(frozen=True, slots=True)
class FeedUpdate:
    """The new feed state decided from a PollOutcome (see monitor.decide)."""

    last_status: str
    last_http_status: int | None
    last_error: str | None
    warning: str | None
    etag: str | None
    last_modified: str | None
    consecutive_failures: int
    last_attempt: datetime
    last_success: datetime | None
    next_poll: datetime | None
    disabled: bool
    elapsed_ms: int
    title: str | None = None


@dataclass(frozen=True, slots=True)
class HealthNotice:
    """A feed started to need a look (failing, silent, disabled), or recovered from it."""

    feed: str
    flag: str  # failing | silent | disabled: the problem, or for a recovery the one that ended
    detail: str = ""  # the flag as `reelwatch feeds status` shows it, e.g. "failing (2d)"
    recovered: bool = False
