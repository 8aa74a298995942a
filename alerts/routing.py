"""Which channels an item's alert goes to. Pure.

A route takes an item that matches any of its topics (any topic, also one of
your own) and, when it lists feeds, comes from one of them, with a score of at
least its min_score. A relevant item that no route took goes to the default
channel. An item reaches each channel at most once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitor.types import Match


@dataclass(frozen=True, slots=True)
class Route:
    topics: frozenset[str]
    feeds: frozenset[str]
    channel: str
    min_score: float


@dataclass(frozen=True, slots=True)
class Router:
    routes: tuple[Route, ...] = ()
    default_channel: str | None = None
    min_score: float = 0.0
    # "bot": channels as routed; "webhook": the webhook's one channel; "console": stdout
    transport: str = "console"

    def channels(self, feed: str, matches: Sequence[Match]) -> list[str]:
        if not matches:
            return []
        scores = {m.topic: m.score for m in matches}
        chosen: list[str] = []
        for route in self.routes:
            if route.feeds and feed not in route.feeds:
                continue
            wanted = (
                [scores[t] for t in scores if t in route.topics]
                if route.topics
                else [max(scores.values())]
            )
            if wanted and max(wanted) >= route.min_score:
                chosen.append(route.channel)
        if not chosen and self.default_channel and max(scores.values()) >= self.min_score:
            chosen.append(self.default_channel)
        if self.transport == "webhook":
            return ["webhook"] if chosen else []
        if self.transport == "console":
            return ["console"] if chosen else []
        return list(dict.fromkeys(chosen))


def make_router(slack: object, transport: str) -> Router:
    """The Router for feeds.yaml's `slack:` section (a monitor.config.SlackConfig)."""
    routes = tuple(
        Route(
            frozenset(r.topics),
            frozenset(r.feeds),
            r.channel,
            r.min_score if r.min_score is not None else slack.min_score,  # type: ignore[attr-defined]
        )
        for r in slack.routes  # type: ignore[attr-defined]
    )
    default = slack.default_channel  # type: ignore[attr-defined]
    if transport != "bot":
        default = default or transport  # webhook and console need no channel name
    return Router(routes, default, slack.min_score, transport)  # type: ignore[attr-defined]
