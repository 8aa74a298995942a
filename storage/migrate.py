"""Schema migrations: Alembic, configured here in code (an installed reelwatch needs no
alembic.ini), bringing any database to the schema of storage/models.py."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    inspect,
    text,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

from storage.models import UTCDateTime
from storage.types import SchemaUpgrade

if TYPE_CHECKING:
    from alembic.autogenerate.api import AutogenContext
    from alembic.config import Config

# Alembic is imported only when a database is not at HEAD already: every command checks
# the schema, and importing Alembic costs more than the rest of a warm poll's start-up.
# the newest revision in migrations/versions (a test keeps them in step)
HEAD = "applied_configs"

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "baseline"
# The tables create_all made before reelwatch had migrations: finding some of them in a
# database without an alembic_version table means it predates migrations.
BASELINE_TABLES = frozenset(
    {"feeds", "items", "matches", "deliveries", "feed_notices", "heartbeats", "digests",
     "stories", "story_keys", "story_items", "story_messages"}
)  # fmt: skip
_PG_UPGRADE_LOCK = 7400790  # one upgrade at a time (7400713: `run`, 7400714: worker scheduling)

log = logging.getLogger(__name__)


class SchemaError(Exception):
    """The database's schema cannot be brought to this release's."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration without a file; env.py runs on `connection` when given."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, f"no revisions in {MIGRATIONS}"
    return head


def context_options(dialect_name: str) -> dict[str, Any]:
    """How env.py, autogenerate and the schema tests see the models: one place."""
    return {
        "target_metadata": SQLModel.metadata,
        # SQLite alters a table by copying it: batch mode writes migrations that way
        "render_as_batch": dialect_name == "sqlite",
        "render_item": render_item,
        "compare_type": True,
    }


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Autogenerate writes our column types as code a migration can run."""
    if type_ != "type":
        return False
    if isinstance(obj, UTCDateTime):
        autogen_context.imports.add("from storage.models import UTCDateTime")
        return "UTCDateTime()"
    # sqlmodel's AutoString is a plain String; written as such, a migration does not
    # need `import sqlmodel`
    if isinstance(obj, AutoString):
        length = obj.impl.length  # type: ignore[attr-defined]
        return f"sa.String(length={length})" if length else "sa.String()"
    return False


@contextlib.contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection fit to migrate on: on SQLite, foreign keys off while batch migrations
    copy and drop tables (SQLite ignores the pragma inside a transaction, so it is set
    before BEGIN) and checked before commit by `check_foreign_keys`."""
    with engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            yield conn
            return
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.execute("PRAGMA foreign_keys=OFF")
        try:
            yield conn
        finally:
            raw.execute("PRAGMA foreign_keys=ON")


def check_foreign_keys(conn: Connection) -> None:
    if conn.dialect.name != "sqlite":
        return  # PostgreSQL checks them as it migrates
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        tables = sorted({row[0] for row in broken})
        raise SchemaError(f"the migration left rows with broken foreign keys in {tables}")


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_schema(engine: Engine) -> SchemaUpgrade:
    """Bring the database to the head revision, in one transaction.

    An empty database gets the models' tables as they are and is stamped at head, without
    Alembic (which costs a fresh service ~11 MiB and a second; tests check that the
    revisions build the same schema). A database that create_all made before reelwatch
    had migrations (reelwatch tables but no alembic_version) is taken as the baseline: the
    baseline revision creates only the tables it lacks (none, or those of features newer
    than the release that made it) and records itself, which is a stamp at baseline; the
    later revisions then run on it.
    """
    if _at_head(engine):
        return SchemaUpgrade(HEAD, HEAD)
    if _created_at_head(engine):
        log.info("database created at schema revision %s", HEAD)
        return SchemaUpgrade(None, HEAD)
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    head = head_revision()
    with migration_connection(engine) as conn, conn.begin():
        _one_upgrade_at_a_time(conn)
        before = MigrationContext.configure(conn).get_current_revision()
        if before == head:
            return SchemaUpgrade(before, head)
        if before is not None and not _known(before):
            raise SchemaError(_unknown_revision(engine, before))
        predates = before is None and bool(BASELINE_TABLES & set(inspect(conn).get_table_names()))
        if predates:
            log.info("database predates migrations: taking its tables as revision %s", BASELINE)
        command.upgrade(alembic_config(conn), "head")
        check_foreign_keys(conn)
        after = MigrationContext.configure(conn).get_current_revision()
    log.info("database schema upgraded from=%s to=%s", before or "none", after)
    return SchemaUpgrade(before, after or head, predates)


def _created_at_head(engine: Engine) -> bool:
    """Create the schema in an empty database and stamp it at HEAD (as Alembic's own
    version table records it); False, changing nothing, if the database holds any table."""
    with engine.connect() as conn, conn.begin():
        _one_upgrade_at_a_time(conn)
        if inspect(conn).get_table_names():
            return False
        SQLModel.metadata.create_all(conn)
        version = Table(
            "alembic_version", MetaData(), Column("version_num", String(32), nullable=False),
            PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
        )  # fmt: skip
        version.create(conn)
        conn.execute(version.insert(), {"version_num": HEAD})
    return True


def _one_upgrade_at_a_time(conn: Connection) -> None:
    """Wait for any other process upgrading or creating the schema (PostgreSQL; SQLite's
    BEGIN IMMEDIATE already serialises writers), until this transaction ends."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_UPGRADE_LOCK})


def _at_head(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).all() == [(HEAD,)]
    except SQLAlchemyError:  # no such table yet
        return False


def _known(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def _unknown_revision(engine: Engine, revision: str) -> str:
    where = engine.url.render_as_string(hide_password=True)
    return (
        f"{where} is at schema revision {revision!r}, which this reelwatch does not know: "
        "a newer release upgraded it; run that release"
    )
