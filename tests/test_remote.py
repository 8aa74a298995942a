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
from tests.conftest import fixture, write_config
from tests.servers import FeedServer, SlackServer
from tests.test_service import start, wait_for
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


def _storage_process(service: int) -> int | None:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == service and b"multiprocessing.spawn" in cmdline:
            return int(stat.parent.name)
    return None


def test_a_service_whose_storage_process_dies_stops_with_an_error(
    feed_server: FeedServer, slack_server: SlackServer, tmp_path: Path
) -> None:
    """Without its storage a service could only fail every poll and lose every alert:
    it stops (exit 1), for its supervisor to start it afresh."""
    config = write_config(
        tmp_path, {"ars": feed_server.add("/ars.xml", fixture("arstechnica_2024-04-01_rss2.xml"))}
    )
    proc = start(config, slack_server)
    try:
        assert wait_for(lambda: _storage_process(proc.pid) is not None), "no storage process"
        assert wait_for(lambda: bool(feed_server.seen("/ars.xml"))), "the feed was not polled"
        os.kill(_storage_process(proc.pid) or 0, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, out
    assert "the storage process died (killed, or out of memory): stopping" in out


POLL_AND_LIST_IMPORTS = textwrap.dedent("""
    import sys
    from monitor.cli import main
    code = main(["poll", "--config", sys.argv[1]])
    print("heavy:", sorted({m.split(".")[0] for m in sys.modules}
                           & {"sqlalchemy", "sqlmodel", "alembic", "psycopg"}))
    sys.exit(code)
""")


def test_a_poll_keeps_sqlalchemy_in_the_storage_process(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    """What the storage process answers is read without sqlalchemy: importing it would
    make the service's process wait for it (a sixth of a warm poll of 2,000 feeds) and
    hold it in memory besides the storage process."""
    config = write_config(
        tmp_path, {"ars": feed_server.add("/ars.xml", fixture("arstechnica_2024-04-01_rss2.xml"))}
    )
    env = {**os.environ, "REELWATCH_DATABASE_URL": f"sqlite:///{tmp_path}/rw.db",
           "REELWATCH_ALLOW_PRIVATE_NETWORKS": "1"}  # fmt: skip
    env = {k: v for k, v in env.items() if not k.startswith("REELWATCH_SLACK")}
    done = subprocess.run(
        [sys.executable, "-c", POLL_AND_LIST_IMPORTS, str(config)], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "feeds: 1 ok" in done.stdout
    assert "heavy: []" in done.stdout, done.stdout
