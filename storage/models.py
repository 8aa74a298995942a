"""The tables. Domain types (monitor.types) are converted to and from these in repo.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Text, TypeDecorator, UniqueConstraint
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (naive text) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass UTC-aware times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc(**kw: Any) -> Any:
    nullable = kw.pop("nullable", True)
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable, **kw))


class FeedRow(SQLModel, table=True):
    __tablename__ = "feeds"

    name: str = Field(primary_key=True)
    url: str = Field(sa_type=Text)
    title: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    last_status: str | None = None  # ok | unchanged | failed | gone
    last_http_status: int | None = None
    last_error: str | None = Field(default=None, sa_type=Text)
    warning: str | None = Field(default=None, sa_type=Text)
    consecutive_failures: int = 0
    last_attempt: datetime | None = _utc()
    last_success: datetime | None = _utc()
    next_poll: datetime | None = _utc()
    disabled: bool = False
    polls: int = 0
    mean_poll_ms: float | None = None
    # a worker polling the feed holds it until then (several workers on PostgreSQL);
    # a worker that dies lets the lease run out and another takes the feed
    lease_until: datetime | None = _utc()
    leased_by: str | None = None


class ItemRow(SQLModel, table=True):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("feed", "identity", name="uq_items_feed_identity"),
        Index("ix_items_url", "url"),
        Index("ix_items_published", "published"),
    )

    id: int | None = Field(default=None, primary_key=True)
    feed: str
    identity: str = Field(sa_type=Text)
    guid: str | None = Field(default=None, sa_type=Text)
    url: str | None = Field(default=None, sa_type=Text)
    title: str = Field(sa_type=Text)
    summary: str = Field(default="", sa_type=Text)
    author: str | None = None
    categories: list[str] = Field(default_factory=list, sa_type=JSON)
    language: str | None = None
    published: datetime = _utc(nullable=False)
    first_seen: datetime = _utc(nullable=False)


class MatchRow(SQLModel, table=True):
    __tablename__ = "matches"
    __table_args__ = (UniqueConstraint("item_id", "topic", name="uq_matches_item_topic"),)

    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="items.id", index=True)
    topic: str = Field(index=True)
    terms: list[str] = Field(default_factory=list, sa_type=JSON)
    score: float
    # [term, field, offset] where each term was first found: "why you got this"
    positions: list[list[Any]] = Field(default_factory=list, sa_type=JSON)


class DeliveryRow(SQLModel, table=True):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("item_id", "channel", name="uq_deliveries_item_channel"),
        Index("ix_deliveries_due", "status", "next_attempt"),
    )

    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="items.id", index=True)
    channel: str  # a Slack channel, "webhook" or "console"
    status: str = "pending"  # pending | sent | failed
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_type=Text)
    next_attempt: datetime = _utc(nullable=False)
    created: datetime = _utc(nullable=False)
    sent_at: datetime | None = _utc()
    lease_until: datetime | None = _utc()  # claimed by a sender until then
    leased_by: str | None = None


class FeedNoticeRow(SQLModel, table=True):
    """A health notice sent for a feed (failing, silent, disabled) and not yet recovered:
    kept so a feed gets one notice per problem, across restarts."""

    __tablename__ = "feed_notices"

    feed: str = Field(primary_key=True)
    flag: str  # failing | silent | disabled
    noticed_at: datetime = _utc(nullable=False)


class HeartbeatRow(SQLModel, table=True):
    __tablename__ = "heartbeats"

    name: str = Field(primary_key=True)
    at: datetime = _utc(nullable=False)
    pid: int
    host: str


class AppliedConfigRow(SQLModel, table=True):
    """The feeds.yaml text `run` last started or reloaded with: a restart after an edit
    that broke the file runs on it, and says so, instead of not starting at all."""

    __tablename__ = "applied_configs"

    path: str = Field(primary_key=True)  # the file's absolute path
    text: str = Field(sa_type=Text)
    applied_at: datetime = _utc(nullable=False)


class DigestRow(SQLModel, table=True):
    """One digest period: recorded when sending starts, so it is sent once and never missed."""

    __tablename__ = "digests"
    __table_args__ = (UniqueConstraint("name", "period_start", name="uq_digests_name_period"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str
    period_start: datetime = _utc(nullable=False)
    period_end: datetime = _utc(nullable=False)
    status: str = "sending"  # sending | retry | sent | failed
    attempts: int = 0
    items: int = 0
    # recipients still to send to (a 4xx for some of them): retried alone
    pending: list[str] = Field(default_factory=list, sa_type=JSON)
    last_error: str | None = Field(default=None, sa_type=Text)
    next_attempt: datetime | None = _utc()
    sent_at: datetime | None = _utc()
    updated: datetime = _utc(nullable=False)


class StoryRow(SQLModel, table=True):
    """One news event, however many outlets and languages carry it."""

    __tablename__ = "stories"

    id: int | None = Field(default=None, primary_key=True)
    lead_item_id: int = Field(foreign_key="items.id")  # the first report: it alerted
    title: str = Field(sa_type=Text)
    first_seen: datetime = _utc(nullable=False, index=True)
    last_seen: datetime = _utc(nullable=False)
    items: int = 1
    outlets: list[str] = Field(default_factory=list, sa_type=JSON)
    languages: list[str] = Field(default_factory=list, sa_type=JSON)
    topics: list[str] = Field(default_factory=list, sa_type=JSON)
    # signatures (monitor.stories.Signature.to_json) of the first members, compared with
    # each new item
    signatures: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)


class StoryKeyRow(SQLModel, table=True):
    """Index keys of open stories (link, title, names, word sketch): candidates by lookup."""

    __tablename__ = "story_keys"
    # covering: finding a batch's candidate stories reads (key, story) from the index alone
    __table_args__ = (Index("ix_story_keys_key_seen_story", "key", "first_seen", "story_id"),)

    key: str = Field(primary_key=True, sa_type=Text)
    story_id: int = Field(primary_key=True, foreign_key="stories.id")
    first_seen: datetime = _utc(nullable=False)


class StoryItemRow(SQLModel, table=True):
    __tablename__ = "story_items"

    item_id: int = Field(primary_key=True, foreign_key="items.id")
    story_id: int = Field(foreign_key="stories.id", index=True)
    reason: str = Field(default="", sa_type=Text)  # why it joined ("same names (…)")
    exact: bool = False  # a syndicated copy: counted, never alerted


class StoryMessageRow(SQLModel, table=True):
    """The Slack message a story's alert became in a channel: replies thread under it."""

    __tablename__ = "story_messages"

    story_id: int = Field(primary_key=True, foreign_key="stories.id")
    channel: str = Field(primary_key=True)
    channel_id: str  # what Slack answered (chat.update wants the id)
    ts: str
