"""The feeds.yaml text `run` last applied: found again by a restart on a broken file."""

from __future__ import annotations

import os
from pathlib import Path

from monitor.cli import _start_config
from storage import Repository, make_engine
from tests.test_reload import feeds_yaml


def test_a_restart_finds_the_last_applied_through_a_configmaps_symlinks(tmp_path: Path) -> None:
    # Kubernetes mounts a ConfigMap as feeds.yaml -> ..data/feeds.yaml, ..data -> a
    # directory named by the time of the mount or update: what the file resolves to
    # changes at every pod start, what the service is given does not
    repo = Repository(make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}"))
    repo.create_schema()
    mount = tmp_path / "config"
    mount.mkdir()

    def mounted(stamp: str, text: str) -> None:
        (mount / stamp).mkdir()
        (mount / stamp / "feeds.yaml").write_text(text)
        (mount / "..data_tmp").symlink_to(stamp)
        os.replace(mount / "..data_tmp", mount / "..data")
        if not (mount / "feeds.yaml").is_symlink():
            (mount / "feeds.yaml").symlink_to("..data/feeds.yaml")

    mounted("..2026_12_01_10_00_00.1", feeds_yaml({"a": "https://example.com/a.xml"}))
    config, _text, refused = _start_config(mount / "feeds.yaml", repo)
    assert refused is None and [f.name for f in config.feeds] == ["a"]
    broken = feeds_yaml({"a": "https://example.com/a.xml"}, broken=True)
    mounted("..2026_12_04_10_00_00.2", broken)
    config, text, refused = _start_config(mount / "feeds.yaml", repo)
    assert refused is not None and [f.name for f in config.feeds] == ["a"]
    assert text == broken  # what the watch compares an edit with


def test_a_relative_path_is_kept_as_the_absolute_one(tmp_path: Path, monkeypatch) -> None:
    repo = Repository(make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}"))
    repo.create_schema()
    monkeypatch.chdir(tmp_path)
    Path("feeds.yaml").write_text(feeds_yaml({"a": "https://example.com/a.xml"}))
    _start_config(Path("feeds.yaml"), repo)
    assert repo.applied_config(str(tmp_path / "feeds.yaml")) is not None
