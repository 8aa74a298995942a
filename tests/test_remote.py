"""`reelwatch run` and `poll` keep storage in a process of their own (storage.remote):
it answers as the Repository does, its errors come back in words, and the lock on the
database goes with the service."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from monitor.types import ParsedBlob
from storage.remote import RemoteRepository
from storage.repo import PollWrite
from storage.types import DatabaseLockedError, StorageError
from tests.test_storage import AI_NEWS, NOW, items, parsed, update

ROOT = Path(__file__).resolve().parent.parent


def test_the_storage_process_stores_a_poll_as_the_repository_does(database_url: str) -> None:
    batch = items(3)
    blob = ParsedBlob.of(parsed(batch, {batch[0].identity}))
    with RemoteRepository(database_url) as repo:
        repo.create_schema()
        (result,) = repo.store_polls([PollWrite("thr", "https://thr.example/f", update(), blob,
                                                AI_NEWS, NOW)])  # fmt: skip
        assert (result.new_items, result.new_matches, result.new_deliveries) == (3, 1, 1)
        assert repo.feed_state("thr").etag == '"e"'
        assert sorted(s.item.title for s in repo.list_items()) == ["Title 0", "Title 1", "Title 2"]
        (pending,) = repo.pending_deliveries(NOW)
        assert (pending.channel, pending.stored.item.title) == ("#ai-news", "Title 0")


def test_a_database_error_comes_back_in_words(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()  # a directory where the database file should be
    with RemoteRepository(f"sqlite:///{tmp_path}/db") as repo:
        with pytest.raises(StorageError, match=r"OperationalError: .*unable to open database"):
            repo.create_schema()
        # the storage process is still there for the next call
        with pytest.raises(StorageError, match="OperationalError"):
            repo.feed_states()


HOLDER = textwrap.dedent("""
    import sys, time
    from storage.remote import RemoteRepository
    repo = RemoteRepository(sys.argv[1])
    repo.create_schema()
    with repo.exclusive_run():
        print("held", flush=True)
        time.sleep(60)
""")


def test_the_lock_names_the_service_and_goes_with_it_when_it_is_killed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/reelwatch.db"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with RemoteRepository(url) as repo:
            with pytest.raises(DatabaseLockedError, match=f"pid {holder.pid}\\b"):
                repo.exclusive_run().__enter__()
            os.kill(holder.pid, signal.SIGKILL)  # as a crash or the OOM killer would
            holder.wait()
            # the storage process it started held the lock: it goes with the service,
            # and a restarted service takes the database at once
            deadline = time.monotonic() + 5
            while True:
                try:
                    with repo.exclusive_run():
                        break
                except DatabaseLockedError:
                    assert time.monotonic() < deadline, "the killed service's lock stayed"
                    time.sleep(0.05)
    finally:
        holder.kill()
        holder.wait()
