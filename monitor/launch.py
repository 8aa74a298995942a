"""Where the `reelwatch` command and `python -m monitor` start.

A command's imports (sqlalchemy, sqlmodel's models, pydantic, httpx) make some
300,000 objects that live until it exits. While they are being made, the cyclic
garbage collector walks them again and again, finding nothing: about a tenth of a
warm poll. So the collector is off while the command imports what it needs, and
what the imports made is then frozen out of its sight (gc.freeze) before it is
switched back on for the command's own work.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from typing import Any, NoReturn


def entry() -> NoReturn:
    gc.disable()
    if sys.argv[1:2] == ["run"]:
        # A SIGTERM while the service starts (importing, before any handler of its own)
        # is a clean exit, as it is later: a busy machine takes seconds to import.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    storage = None
    try:
        # within the try: a SIGTERM while the command imports closes storage too
        storage = _storage_first(sys.argv[1:])
        from monitor.cli import main

        code = main(after_imports=_collect_from_here, storage=storage)
        sys.stdout.flush()  # here, not at exit, where a closed pipe is a warning
    except BrokenPipeError:
        # the reader left (`reelwatch items | head`): stop quietly, stdout pointed at
        # /dev/null so that the interpreter's last flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    finally:
        if storage is not None:  # the command closed it, unless it never began (a usage error)
            storage.close()
    # What is alive now lives until exit: frozen, the interpreter's closing
    # collections skip it too (a poll exits ~0.2 s sooner).
    gc.freeze()
    sys.exit(code)


def _storage_first(argv: list[str]) -> Any:
    """`poll` and `run` keep storage in a process of their own (storage.remote), started
    here, before the command imports anything: its own imports (sqlalchemy, a third of a
    second) then overlap the command's instead of keeping it waiting (a warm poll of
    2,000 feeds: 1.55 s, not 1.8)."""
    if argv[:1] not in (["poll"], ["run"]) or {"-h", "--help", "--worker"} & set(argv):
        return None
    from storage.remote import RemoteRepository

    return RemoteRepository()


def _collect_from_here() -> None:
    gc.freeze()
    gc.enable()
