"""The engine: SQLite by default (WAL, long busy timeout, immediate write transactions),
PostgreSQL through the same code when REELWATCH_DATABASE_URL says so."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from storage.types import DatabaseLockedError

DEFAULT_DATABASE_URL = "sqlite:///data/reelwatch.db"


def database_url() -> str:
    return os.environ.get("REELWATCH_DATABASE_URL") or DEFAULT_DATABASE_URL


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def make_engine(url: str | None = None) -> Engine:
    url = url or database_url()
    if make_url(url).get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        # Each distinct statement stays prepared in SQLite's cache (128 by default): the
        # batched INSERTs of a poll come in a statement per row count (RETURNING the new
        # ids), each a few hundred KB prepared. Batches of at most 16 rows and 64 cached
        # statements: 3 MiB of SQLite's memory, not 7, for the same CPU (2,000 feeds).
        insertmanyvalues_page_size=16,
        connect_args={"check_same_thread": False, "timeout": 30, "cached_statements": 64},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below); pysqlite's implicit BEGIN is deferred,
        # and a deferred transaction that later writes fails with "database is locked"
        # instead of waiting for busy_timeout.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if path is not None:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextlib.contextmanager
def exclusive_run(engine: Engine, holder: int | None = None) -> Iterator[None]:
    """Hold the one-`run`-per-database lock, released by the OS if the process dies.
    `holder`: the pid the lock names (the service's, when storage.remote holds it)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            got = conn.execute(text("SELECT pg_try_advisory_lock(7400713)")).scalar()
            conn.commit()
            if not got:
                raise DatabaseLockedError(
                    "another `reelwatch run` is already using this database; stop it first"
                )
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(7400713)"))
                conn.commit()
        return
    path = sqlite_path(str(engine.url))
    if path is None:
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise DatabaseLockedError(
                f"another `reelwatch run` ({holder}) is already using {path}; stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {holder or os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class RoleLock:
    """A role one process at a time holds among several workers (PostgreSQL advisory lock
    on a connection kept open): released by the server when the process dies."""

    def __init__(self, engine: Engine, key: int):
        self.engine = engine
        self.key = key
        self._conn: Any = None

    def held(self) -> bool:
        """True if this process holds the role, taking it when it is free."""
        if self._conn is not None:
            return True
        conn = self.engine.connect()
        try:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
            conn.commit()
        except Exception:
            conn.close()
            raise
        if got:
            self._conn = conn
            return True
        conn.close()
        return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self._conn.commit()
            self._conn.close()
            self._conn = None
