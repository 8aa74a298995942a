"""Hot reload of feeds.yaml: what changed between two configurations (pure), and the
watch that says when the file was saved (watchfiles)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from monitor.config import Config

log = logging.getLogger(__name__)

# the fetcher is built once, with these: a change needs a restart
RESTART_DEFAULTS = (
    "user_agent", "max_body_bytes", "concurrency", "per_host_concurrency",
    "allow_private_networks",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ConfigChange:
    feeds_added: tuple[str, ...] = ()
    feeds_removed: tuple[str, ...] = ()
    # url, interval (its own or the default), timeout, language, tags or enabled changed
    feeds_changed: tuple[str, ...] = ()
    topics_changed: tuple[str, ...] = ()  # added, removed or edited
    watchlists_changed: tuple[str, ...] = ()
    slack_changed: bool = False
    digests_changed: bool = False
    restart_needed: tuple[str, ...] = ()  # settings that take effect at the next start

    def summary(self) -> str:
        """One log line's key=value fields."""

        def names(values: tuple[str, ...]) -> str:
            return ",".join(values) or "-"

        text = (
            f"feeds_added={names(self.feeds_added)} feeds_removed={names(self.feeds_removed)} "
            f"feeds_changed={names(self.feeds_changed)} "
            f"topics_changed={names(self.topics_changed)} "
            f"watchlists_changed={names(self.watchlists_changed)} "
            f"slack={'changed' if self.slack_changed else 'same'} "
            f"digests={'changed' if self.digests_changed else 'same'}"
        )
        if self.restart_needed:
            text += f" restart_needed={names(self.restart_needed)}"
        return text


def _changed_keys(old: dict, new: dict) -> tuple[str, ...]:
    return tuple(sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)))


def diff_config(old: Config, new: Config) -> ConfigChange:
    before = {f.name: f for f in old.feeds}
    after = {f.name: f for f in new.feeds}
    changed = tuple(
        name
        for name, feed in after.items()
        if name in before
        and (
            feed != before[name]
            or new.interval(feed) != old.interval(before[name])
            or new.timeout(feed) != old.timeout(before[name])
        )
    )
    return ConfigChange(
        feeds_added=tuple(n for n in after if n not in before),
        feeds_removed=tuple(n for n in before if n not in after),
        feeds_changed=changed,
        topics_changed=_changed_keys(old.topics, new.topics),
        watchlists_changed=_changed_keys(old.watchlists, new.watchlists),
        slack_changed=old.slack != new.slack,
        digests_changed=old.digests != new.digests,
        restart_needed=tuple(
            f"defaults.{key}"
            for key in RESTART_DEFAULTS
            if getattr(old.defaults, key) != getattr(new.defaults, key)
        ),
    )


# Kubernetes updates a mounted ConfigMap by swapping this symlink, not the file itself
_CONFIGMAP_LINK = "..data"


async def watch_config(
    path: Path, stop: asyncio.Event, *, force_polling: bool | None = None
) -> AsyncIterator[None]:
    """Yield each time `path` may have been saved, until `stop` is set; and once as soon
    as the watch is set up, if the file is there: a save made before the watch could see
    it (while the service started, or with the file's directory) is read then.

    Watches the file's directory, not the file: editors save by writing a temporary file
    and renaming it over the old one, and a watch on the old file would see nothing.
    """
    from watchfiles import awatch  # imported when used: only `reelwatch run` needs it

    target = path.resolve()

    def is_config(_change: object, changed: str) -> bool:
        name = Path(changed).name
        return name == target.name or name == _CONFIGMAP_LINK

    set_up = False
    # step: yield once the directory has been quiet for 300 ms, not mid-save; the watch
    # wakes every second, changes or not (the first wake-up: the watch is set up)
    async for changes in awatch(
        target.parent, watch_filter=is_config, stop_event=stop, recursive=False, step=300,
        force_polling=force_polling, poll_delay_ms=1000, rust_timeout=1000,
        yield_on_timeout=True,
    ):  # fmt: skip
        if changes or (not set_up and path.exists()):
            yield
        set_up = True
