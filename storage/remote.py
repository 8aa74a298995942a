"""The Repository in a process of its own, for `reelwatch run` and `reelwatch poll`.

The service's process fetches, schedules, and talks to Slack and SMTP; storage (the
SQL, and the open stories it compares new items with) runs in a second process. So
neither holds both sqlalchemy and the stories: a cold poll of 2,000 feeds peaked at
124 MiB in one process (bench/farm_bench.py), more than the two of them now. Parsed
items go from the parse workers to storage as the workers pickled them (ParsedBlob):
the service only forwards the bytes.

Every call waits for its answer; calls from several threads are answered one at a
time, in turn (SQLite writes one at a time anyway). Storage's errors come back as
StorageError (the drivers' exception types stay in the storage process), but for
DatabaseLockedError. The storage process ignores Ctrl-C and SIGTERM (the service
shuts it down after its last write), and leaves if the service dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from storage.types import DatabaseLockedError, StorageError

log = logging.getLogger(__name__)


class RemoteRepository:
    """storage.repo.Repository's methods, run in the storage process."""

    def __init__(self, url: str | None = None):
        from monitor import logs

        self.died = False
        # called once, from whichever thread found the storage process gone: the service
        # stops (exit 1) for its supervisor to start it afresh; without storage it could
        # only fail every poll and lose every alert
        self.on_death: Callable[[], None] | None = None

        self._pool = ProcessPoolExecutor(
            max_workers=1,
            # a fresh interpreter: it imports storage, nothing the service's process holds
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(os.getpid(), url, logs.settings),
        )
        # started now (not waited for: its imports overlap the caller's work), from
        # this thread: the parent-death signal follows the thread that started the
        # process, and this one lives as long as the service
        self._pool.submit(_ready)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return self._pool.submit(fn, *args).result()
        except BrokenProcessPool:
            if not self.died:
                self.died = True
                log.critical("the storage process died (killed, or out of memory): stopping")
                if self.on_death is not None:
                    self.on_death()
            raise StorageError("the storage process died (killed, or out of memory)") from None

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        def method(*args: Any, **kwargs: Any) -> Any:
            return self._call(_method, name, args, kwargs)

        method.__name__ = name
        return method

    @contextlib.contextmanager
    def exclusive_run(self) -> Iterator[None]:
        """storage.db.exclusive_run, held by the storage process in the service's name."""
        self._call(_lock, os.getpid())
        try:
            yield
        finally:
            with contextlib.suppress(StorageError):
                self._call(_unlock)

    def log_as(self, fmt: str, level: str) -> None:
        """The storage process logs as the command does, from its next call on (started
        before logging was set up: monitor.launch starts it first). Not waited for:
        calls are answered in turn, so this one comes before any that follows."""
        self._pool.submit(_log_as, fmt, level)

    def close(self) -> None:
        # what was asked and not yet begun (a log_as at a stop while starting) is dropped
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> RemoteRepository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the storage process ---------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_repo: Any = None
_held = contextlib.ExitStack()


def _start(owner: int, url: str | None, logging_settings: tuple[str, str] | None) -> None:
    # Ctrl-C reaches the whole process group, and systemd's SIGTERM every process of the
    # service: the service stops first, then ends this process after its last write.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The service killed (SIGKILL, out of memory): this process goes at once, as a killed
    # process would (its transaction rolls back) and with it the lock on the database,
    # which a restarted service takes (Linux; elsewhere within a second, below).
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    threading.Thread(target=_exit_with, args=(owner,), daemon=True).start()
    if logging_settings is not None:
        _log_as(*logging_settings)
    global _repo
    # as monitor.launch does: the collector off while the imports make objects that
    # live until exit, then those frozen out of its sight
    gc.disable()
    from storage import Repository, make_engine

    _repo = Repository(make_engine(url))
    gc.freeze()
    gc.enable()


def _exit_with(owner: int) -> None:
    while os.getppid() == owner:
        time.sleep(1.0)
    os._exit(0)


def _ready() -> None:
    pass


def _log_as(fmt: str, level: str) -> None:
    from monitor.logs import setup_logging

    setup_logging(fmt, level)


def _method(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        result = getattr(_repo, name)(*args, **kwargs)
    except Exception as exc:
        raise _portable(exc) from None
    if isinstance(result, list) and any(isinstance(r, Exception) for r in result):
        result = [_portable(r) if isinstance(r, Exception) else r for r in result]  # store_polls
    return result


def _portable(exc: Exception) -> Exception:
    """The exception as the service's process can read it without the drivers."""
    if isinstance(exc, DatabaseLockedError | StorageError):
        return exc
    if type(exc).__module__.split(".")[0] in ("builtins", "monitor"):
        with contextlib.suppress(Exception):
            pickle.loads(pickle.dumps(exc))
            return exc
    return StorageError(f"{type(exc).__name__}: {exc}")


def _lock(holder: int) -> None:
    from storage.db import exclusive_run

    _held.enter_context(exclusive_run(_repo.engine, holder))


def _unlock() -> None:
    _held.close()
