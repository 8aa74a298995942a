"""The notice that feeds.yaml was refused: said once, and not lost to a Slack outage."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from alerts.routing import make_router
from alerts.slack import SlackSettings
from monitor.config import StartRefusal, parse_config
from monitor.errors import ConfigError
from monitor.pipeline import Poller
from monitor.scheduler import Service
from storage import Repository, make_engine
from tests.servers import SlackServer
from tests.test_reload import feeds_yaml


def test_a_refusal_notice_slack_did_not_take_is_posted_again(
    slack_server: SlackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a restart on a broken feeds.yaml at boot, before the network is up: the one notice
    # that says the service runs on an old copy must not be lost
    from datetime import UTC, datetime, timedelta

    import monitor.scheduler

    retry = timedelta(seconds=0.5)
    monkeypatch.setattr(monitor.scheduler, "NOTICE_RETRY", retry, raising=False)
    path = tmp_path / "feeds.yaml"
    config = parse_config(feeds_yaml({"a": "http://127.0.0.1:9/a.xml"}))
    with pytest.raises(ConfigError) as broken:
        parse_config(feeds_yaml({"a": "http://127.0.0.1:9/a.xml"}, broken=True), str(path))
    repo = Repository(make_engine(f"sqlite:///{tmp_path / 'r.db'}"))
    repo.create_schema()
    slack = SlackSettings(webhook_url=None, bot_token=slack_server.token,
                          api_url=slack_server.api_url)  # fmt: skip
    slack_server.fail_next(503)

    def refusals() -> list:
        return [c for c in slack_server.calls if "was refused" in c.payload.get("text", "")]

    async def scenario() -> None:
        poller = Poller(config, repo, router=make_router(config.slack, slack.transport))
        start = StartRefusal(broken.value, datetime(2026, 12, 4, 9, tzinfo=UTC))
        service = Service(config, poller, slack, path, refused=start)
        service.scheduler.start()
        try:
            await service.refuse(start.problems, since=start.applied_at)
            assert not refusals() and len(slack_server.attempts) == 1
            for _ in range(50):
                if refusals():
                    break
                await asyncio.sleep(0.1)
            await service.refuse(broken.value)  # the same problems: said once
            await asyncio.sleep(1)
        finally:
            service.scheduler.shutdown(wait=False)
            await poller.aclose()

    asyncio.run(scenario())
    assert len(refusals()) == 1
