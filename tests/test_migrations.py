"""Migrations bring any database to the models' schema, on SQLite and PostgreSQL, and a change
to storage/models.py without a migration fails here."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

from monitor.cli import main
from storage import Repository, make_engine
from storage.migrate import (
    BASELINE,
    BASELINE_TABLES,
    HEAD,
    SchemaError,
    alembic_config,
    context_options,
    current_revision,
    head_revision,
    migration_connection,
    render_item,
    upgrade_schema,
)
from storage.models import UTCDateTime
from tests.test_storage import AI_NEWS, NOW, items, parsed, update


def schema_differences(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=context_options(conn.dialect.name))
        return compare_metadata(context, SQLModel.metadata)


def made_before_migrations(engine: sa.Engine, without: Sequence[str] = ()) -> None:
    """A database as create_all made it before reelwatch had migrations, by a release that
    lacked the tables `without` (referenced tables first). The baseline revision is that
    schema (it was generated from it); create_all cannot make it any more, since later
    revisions change the models."""
    with engine.connect() as conn, conn.begin():
        command.upgrade(alembic_config(conn), BASELINE)
        for table in ["alembic_version", *reversed(without)]:
            conn.execute(sa.text(f"DROP TABLE {table}"))


def test_an_empty_database_is_upgraded_to_exactly_the_models_schema(database_url: str) -> None:
    engine = make_engine(database_url)
    done = Repository(engine).create_schema()
    assert (done.before, done.after, done.predates_migrations) == (None, head_revision(), False)
    assert current_revision(engine) == head_revision()
    assert schema_differences(engine) == []


def test_models_changed_without_a_migration_fail_here(database_url: str) -> None:
    """The guard: what `alembic revision --autogenerate` would write against head is nothing.
    (An empty database is made from the models directly; the revisions must build the same.)"""
    engine = make_engine(database_url)
    with migration_connection(engine) as conn, conn.begin():
        command.upgrade(alembic_config(conn), "head")
    assert current_revision(engine) == HEAD
    with engine.connect() as conn:
        options = context_options(conn.dialect.name)
        migration = produce_migrations(
            MigrationContext.configure(conn, opts=options), SQLModel.metadata
        )
    missing = render_python_code(
        migration.upgrade_ops, render_item=render_item, render_as_batch=options["render_as_batch"]
    )
    assert migration.upgrade_ops.is_empty(), (
        "storage/models.py differs from the schema the migrations build: add a revision "
        "(`reelwatch db upgrade`, then `alembic revision --autogenerate -m 'what changed'`) "
        f"doing:\n{missing}"
    )


def store_old_rows(engine: sa.Engine, n: int) -> None:
    """Rows as a release before migrations wrote them: only the columns it had."""
    with engine.connect() as conn, conn.begin():
        table = {t: sa.Table(t, sa.MetaData(), autoload_with=conn)
                 for t in ("feeds", "items", "matches", "deliveries")}  # fmt: skip
        conn.execute(table["feeds"].insert(), [
            {"name": "thr", "url": "https://thr.example/feed", "etag": '"e"',
             "consecutive_failures": 0, "disabled": False, "polls": 1, "next_poll": NOW}
        ])  # fmt: skip
        conn.execute(table["items"].insert(), [
            {"id": i + 1, "feed": "thr", "identity": item.identity, "title": item.title,
             "summary": item.summary, "url": item.url, "categories": ["Film"],
             "published": item.published, "first_seen": NOW}
            for i, item in enumerate(items(n))
        ])  # fmt: skip
        conn.execute(table["matches"].insert(), [
            {"item_id": 2, "topic": "ai", "terms": ["AI"], "score": 2.0, "positions": []}
        ])  # fmt: skip
        conn.execute(table["deliveries"].insert(), [
            {"item_id": 2, "channel": "#ai-news", "status": "pending", "attempts": 0,
             "next_attempt": NOW, "created": NOW}
        ])  # fmt: skip


def test_a_database_made_by_create_all_is_stamped_at_baseline_and_keeps_its_rows(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    made_before_migrations(engine)
    store_old_rows(engine, 30)
    repo = Repository(make_engine(database_url))
    done = repo.create_schema()
    assert (done.before, done.after, done.predates_migrations) == (None, head_revision(), True)
    assert current_revision(engine) == head_revision()
    assert schema_differences(engine) == []
    assert repo.count_items() == 30 and repo.feed_state("thr").etag == '"e"'
    (pending,) = repo.pending_deliveries(NOW)
    assert (pending.stored.id, pending.channel) == (2, "#ai-news")
    assert [m.topic for s in repo.list_items(topic="ai") for m in s.matches] == ["ai"]
    # and the current code goes on with it: the same items again are nothing new
    again = repo.store_poll("thr", "https://thr.example/feed", update(),
                            parsed(items(30), {"g1"}), AI_NEWS, NOW)  # fmt: skip
    assert (again.new_items, again.new_deliveries) == (0, 0)


def test_a_database_from_before_stories_gets_the_tables_it_lacks(database_url: str) -> None:
    engine = make_engine(database_url)
    made_before_migrations(engine, without=["digests", "feed_notices", "stories", "story_keys",
                                            "story_items", "story_messages"])  # fmt: skip
    store_old_rows(engine, 3)
    assert Repository(engine).create_schema().predates_migrations
    assert schema_differences(engine) == []
    assert Repository(engine).count_items() == 3


def test_db_upgrade_twice_is_a_no_op_the_second_time(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "current"]) == 0
    assert f"none (head is {head_revision()}:" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    assert f"upgraded from none (empty) to {head_revision()}" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    assert f"already at {head_revision()} (head)" in capsys.readouterr().out
    assert main(["db", "current"]) == 0
    assert capsys.readouterr().out == f"{head_revision()} (head)\n"


def test_a_new_database_is_made_without_importing_alembic(database_url: str) -> None:
    # Alembic costs a new service ~11 MiB and a second: only an existing schema needs it
    code = (
        "import sys; from storage import Repository, make_engine; "
        "done = Repository(make_engine(sys.argv[1])).create_schema(); "
        "print(done.before, done.after, 'alembic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, database_url], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["None", HEAD, "False"]
    assert schema_differences(make_engine(database_url)) == []


def test_a_database_from_a_newer_release_is_refused_with_what_to_do(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(database_url)
    upgrade_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    with pytest.raises(SchemaError, match="'f00dfeed', which this reelwatch does not know"):
        Repository(engine).create_schema()
    assert main(["db", "upgrade"]) == 1
    assert "a newer release upgraded it" in capsys.readouterr().err


def test_two_upgrades_at_once_both_succeed(database_url: str) -> None:
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda _: upgrade_schema(make_engine(database_url)), range(2)))
    assert sorted(d.changed for d in done) == [False, True]
    assert schema_differences(make_engine(database_url)) == []


def test_foreign_keys_are_on_again_after_a_sqlite_migration(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/fk.db")
    upgrade_schema(engine)
    with engine.connect() as conn:  # the pool hands back the connection that migrated
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_baseline_creates_the_tables_taken_as_proof_of_a_create_all_database() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert set(script.get_revision(BASELINE).module.TABLES) == BASELINE_TABLES


@pytest.mark.parametrize(
    "column, rendered",
    [
        (
            sa.Column("at", UTCDateTime(), nullable=False),
            "sa.Column('at', UTCDateTime(), nullable=False)",
        ),
        (sa.Column("name", AutoString()), "sa.Column('name', sa.String(), nullable=True)"),
        (sa.Column("body", sa.Text()), "sa.Column('body', sa.Text(), nullable=True)"),
    ],
)
def test_autogenerate_writes_our_column_types_as_runnable_code(
    column: sa.Column, rendered: str
) -> None:
    from alembic.operations.ops import CreateTableOp, UpgradeOps

    table = sa.Table("t", sa.MetaData(), column)
    code = render_python_code(
        UpgradeOps([CreateTableOp.from_table(table)]), render_item=render_item
    )
    assert rendered in code and "sqlmodel" not in code and "storage.models" not in code


def test_head_names_the_newest_revision_and_a_database_there_needs_no_alembic(
    tmp_path: Path,
) -> None:
    assert head_revision() == HEAD
    url = f"sqlite:///{tmp_path}/rw.db"
    Repository(make_engine(url)).create_schema()
    # a second start on the upgraded database: Alembic is never imported
    code = (
        "import sys; from storage import Repository, make_engine; "
        f"done = Repository(make_engine({url!r})).create_schema(); "
        "assert not done.changed and 'alembic' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)
