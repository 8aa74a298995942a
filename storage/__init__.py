"""Persistence: sqlmodel tables, the engine, and every SQL statement reelwatch runs."""

from storage.db import database_url, make_engine
from storage.repo import Repository

__all__ = ["Repository", "database_url", "make_engine"]
