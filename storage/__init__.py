"""Persistence: sqlmodel tables, the engine, and every SQL statement reelwatch runs.

Imported lazily: `storage.types` (what storage takes and gives) must not bring in
sqlalchemy, which the service's own process does without (see storage.remote)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage.db import database_url, make_engine
    from storage.repo import Repository

__all__ = ["Repository", "database_url", "make_engine"]


def __getattr__(name: str) -> Any:
    if name == "Repository":
        from storage.repo import Repository

        return Repository
    if name in ("database_url", "make_engine"):
        from storage import db

        return getattr(db, name)
    raise AttributeError(f"module 'storage' has no attribute {name!r}")
