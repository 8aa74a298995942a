"""Notices about reelwatch itself, for the Slack default channel: a feed that needs a look
(or recovered), and an edit of feeds.yaml that was refused. Rendering only: pure."""

from __future__ import annotations

from datetime import datetime

from alerts.slack import SECTION_MAX, TEXT_MAX, SlackMessage, _cut, escape, safe_link
from monitor.types import HealthNotice

_RECOVERED = {
    "failing": "polls fine again",
    "silent": "has new items again",
    "disabled": "polls fine again at its new URL",
}
_ADVICE = {
    "failing": "reelwatch keeps retrying with backoff; check the URL or the site.",
    "silent": "The feed answers but brings nothing new: it may have moved or stopped.",
    "disabled": "The server said the feed is gone (410): give it a new url: in feeds.yaml.",
}


def _section(text: str) -> dict[str, object]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, SECTION_MAX)}}


def render_health_notice(
    notice: HealthNotice, *, url: str | None = None, error: str | None = None
) -> SlackMessage:
    """A feed started failing, fell silent or was disabled, or recovered from it."""
    name = escape(notice.feed)
    link = safe_link(url)
    where = f" (<{link}|{escape(url or '')}>)" if link else ""
    if notice.recovered:
        what = _RECOVERED.get(notice.flag, "is healthy again")
        text = f"Feed {name} recovered: it {what}."
        body = f":white_check_mark: Feed *{name}*{where} recovered: it {what}."
    else:
        detail = escape(notice.detail or notice.flag)
        text = f"Feed {name} needs a look: {detail}."
        body = f":warning: Feed *{name}*{where} needs a look: {detail}."
        if error:
            body += f"\nLast error: {escape(_cut(error, 500))}"
            text += f" Last error: {escape(_cut(error, 500))}"
        advice = _ADVICE.get(notice.flag)
        if advice:
            body += f"\n{advice}"
    footer = "`reelwatch feeds status` shows every feed's health."
    blocks = [_section(body), {"type": "context", "elements": [{"type": "mrkdwn", "text": footer}]}]
    return SlackMessage(text=_cut(text, TEXT_MAX), blocks=blocks)


def render_config_refused(problems: str, since: datetime | None = None) -> SlackMessage:
    """An edit of feeds.yaml was refused; the service keeps its last good configuration
    (`since`: refused at start, the service runs on the copy applied then)."""
    head = "An edit of feeds.yaml was refused; reelwatch keeps running on the last good one."
    if since is not None:
        head = (f"feeds.yaml was refused at start; reelwatch runs on the one applied "
                f"{since:%Y-%m-%d %H:%M} UTC until the file is fixed.")  # fmt: skip
    # inside a code block mrkdwn styles nothing; only &, <, > and the fence need care
    code = problems.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    code = code.replace("```", "'''")
    body = f":x: {head}\n```{_cut(code, SECTION_MAX - len(head) - 20)}```"
    return SlackMessage(text=_cut(f"{head} {code}", TEXT_MAX), blocks=[_section(body)])
