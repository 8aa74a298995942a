from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import Cluster
from tests.servers import FeedServer, SlackServer

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's Slack secrets or database."""
    for key in list(os.environ):
        if key.startswith("REELWATCH_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("REELWATCH_DATABASE_URL", f"sqlite:///{tmp_path}/reelwatch.db")
    # every test server listens on 127.0.0.1; tests/test_ssrf.py unsets this
    monkeypatch.setenv("REELWATCH_ALLOW_PRIVATE_NETWORKS", "1")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Runs the test once on SQLite and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/reelwatch.db"
    else:
        url = request.getfixturevalue("postgres_cluster").new_database()
    monkeypatch.setenv("REELWATCH_DATABASE_URL", url)
    return url


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer()
    yield server
    server.close()


@pytest.fixture
def slack_server() -> Iterator[SlackServer]:
    server = SlackServer()
    yield server
    server.close()


def write_config(tmp_path: Path, feeds: dict[str, str], extra: str = "", **defaults: str) -> Path:
    """A feeds.yaml polling `feeds` (name -> URL) with one AI topic."""
    lines = ["defaults:"]
    lines += [f"  {k}: {v}" for k, v in ({"interval": "15m", "timeout": "5s"} | defaults).items()]
    lines.append("feeds:")
    for name, url in feeds.items():
        lines += [f"  - name: {name}", f"    url: {url}"]
    lines += [
        "topics:",
        "  ai:",
        "    label: AI",
        "    query: [AI, artificial intelligence, Sora, generative AI, intelligenza artificiale]",
    ]
    path = tmp_path / "feeds.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path
