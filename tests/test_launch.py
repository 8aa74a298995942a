"""The `reelwatch` command's start: imports without the cyclic GC, the command with it."""

from __future__ import annotations

import gc
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

    def command(argv: object = None, *, after_imports: Callable[[], None]) -> int:
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
