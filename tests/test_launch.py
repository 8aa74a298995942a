"""The `reelwatch` command's start: imports without the cyclic GC, the command with it."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor import cli, launch


@pytest.fixture
def restore_gc() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.enable()


def test_the_command_runs_with_the_collector_on_and_start_up_frozen(
    monkeypatch: pytest.MonkeyPatch, restore_gc: None
) -> None:
    seen: dict[str, object] = {}

    def command(
        argv: object = None, *, after_imports: Callable[[], None], storage: object = None
    ) -> int:
        seen["collector while importing"] = gc.isenabled()
        frozen = gc.get_freeze_count()
        after_imports()
        seen["collector during the command"] = gc.isenabled()
        seen["start-up frozen"] = gc.get_freeze_count() > frozen
        return 3

    monkeypatch.setattr(cli, "main", command)
    with pytest.raises(SystemExit) as exited:
        launch.entry()
    assert exited.value.code == 3  # the command's status is the process's
    assert seen == {
        "collector while importing": False,
        "collector during the command": True,
        "start-up frozen": True,
    }


def test_main_calls_after_imports_once_before_the_command(tmp_path: Path) -> None:
    calls: list[str] = []
    missing = tmp_path / "nowhere.yaml"
    status = cli.main(["poll", "--config", str(missing)], after_imports=lambda: calls.append("x"))
    assert status == 2  # the config is missing: the command ran, after the imports
    assert calls == ["x"]


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """`reelwatch items | head` ended in a BrokenPipeError traceback."""
    from storage import Repository, make_engine
    from storage.repo import PollWrite
    from tests.test_storage import AI_NEWS, NOW, items, parsed, update

    url = f"sqlite:///{tmp_path}/r.db"
    repo = Repository(make_engine(url))
    repo.create_schema()
    batch = items(2000)  # ~200 KB of listing: more than a pipe holds
    repo.store_polls([PollWrite("thr", "https://thr.example/f", update(), parsed(batch, set()),
                                AI_NEWS, NOW)])  # fmt: skip
    config = tmp_path / "feeds.yaml"
    config.write_text("feeds: []\n")
    env = {**os.environ, "REELWATCH_DATABASE_URL": url}
    command = (f"{sys.executable} -m monitor items --config {config} --since 36500d "
               "--limit 5000 | head -1")  # fmt: skip
    done = subprocess.run(command, shell=True, env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
