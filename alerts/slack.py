"""Slack: render an alert (pure) and send it through slack-sdk (I/O).

Feed text is data, never Slack syntax: every interpolated field is escaped
(&, <, >) so `<!channel>` in a title pings nobody and `<https://x|y>` cannot
disguise a link.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitor.errors import DeliveryError
from monitor.normalize import is_http_url
from monitor.types import Item, Match

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://slack.com/api/"
SECTION_MAX = 3_000
TEXT_MAX = 40_000
SNIPPET_MAX = 300

# Errors that will not fix themselves by retrying: a person has to act.
PERMANENT_API_ERRORS = {
    "invalid_auth": "the bot token is invalid (REELWATCH_SLACK_BOT_TOKEN)",
    "not_authed": "no bot token was sent (REELWATCH_SLACK_BOT_TOKEN)",
    "account_inactive": "the bot token belongs to a deleted app or user",
    "token_revoked": "the bot token was revoked",
    "channel_not_found": "channel not found",
    "not_in_channel": "the bot is not in this channel: invite it with /invite",
    "is_archived": "the channel is archived",
    "missing_scope": "the bot token lacks the chat:write scope",
    "invalid_blocks": "Slack refused the message layout (invalid_blocks)",
    "msg_too_long": "the message is too long for Slack",
    "restricted_action": "the workspace does not allow this bot to post here",
}


# Of those, the ones that refuse the token itself: every channel would answer the same.
CREDENTIAL_ERRORS = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked"})


@dataclass(frozen=True, slots=True)
class SlackMessage:
    text: str  # plain-text fallback: notifications, screen readers
    blocks: list[dict[str, Any]]


_MRKDWN_CONTROL = re.compile(r"([*_~`])")


def escape(text: str) -> str:
    """Make feed text inert in Slack mrkdwn: no mentions, links or styling."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # A zero-width joiner after *, _, ~, ` stops them pairing into bold/italic/strike/code.
    return _MRKDWN_CONTROL.sub("\\1\u200d", text)


def safe_link(url: str | None) -> str | None:
    if not url or not is_http_url(url) or any(c in url for c in "|<> \n"):
        return None
    return url


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _topics(matches: Sequence[Match]) -> str:
    # topic ids come from feeds.yaml; as code, their underscores cannot italicise
    return ", ".join(f"`{_inert(m.topic)}`" for m in matches) or "-"


def _inert(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")


def render_alert(
    item: Item,
    matches: Sequence[Match],
    feed_title: str | None = None,
    also: Sequence[str] = (),
) -> SlackMessage:
    """One story's alert; `also` names the other outlets that carried it (kept up to date
    with chat.update as reports arrive)."""
    title = escape(_cut(item.title, 400))
    link = safe_link(item.url)
    headline = f"*<{link}|{title}>*" if link else f"*{title}*"
    outlet = escape(feed_title or item.feed)
    when = item.published.strftime("%d %b %Y %H:%M UTC")
    lang = f" · {item.language}" if item.language else ""
    topics = _topics(matches)
    terms = ", ".join(dict.fromkeys(escape(t) for m in matches for t in m.terms))
    snippet = escape(_cut(item.summary, SNIPPET_MAX))
    body = headline + (f"\n{snippet}" if snippet else "")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(body, SECTION_MAX)}},
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": _cut(f"{outlet}{lang} · {when}", SECTION_MAX)},
                {"type": "mrkdwn", "text": _cut(f"Topics: {topics} · why: {terms}", SECTION_MAX)},
            ],
        },
    ]
    if also:
        names = ", ".join(escape(o) for o in also[:10]) + (" …" if len(also) > 10 else "")
        coverage = f"Also covered by {len(also)} more: {names} (see thread)"
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(coverage, 2000)}]}
        )
    text = f"{title} ({outlet}{lang}){f' {link}' if link else ''} [{topics}]"
    return SlackMessage(text=_cut(text, TEXT_MAX), blocks=blocks)


def render_followup(item: Item, feed_title: str | None = None) -> SlackMessage:
    """A later report of a story, as a reply in the thread of its alert."""
    title = escape(_cut(item.title, 400))
    link = safe_link(item.url)
    head = f"<{link}|{title}>" if link else title
    outlet = escape(feed_title or item.feed)
    lang = f" ({item.language})" if item.language else ""
    line = f"Also covered by *{outlet}*{lang}: {head}"
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": _cut(line, SECTION_MAX)}}]
    text = f"Also covered by {outlet}{lang}: {title}{f' {link}' if link else ''}"
    return SlackMessage(text=_cut(text, TEXT_MAX), blocks=blocks)


SUMMARY_MAX_STORIES = 40  # and a header and a footer: under Slack's 50 blocks


def render_summary(
    stories: Sequence[tuple[Item, Sequence[Match]]], feed_titles: Mapping[str, str] | None = None
) -> SlackMessage:
    """Many alerts for one channel at once become one message listing them."""
    titles = feed_titles or {}
    shown = stories[:SUMMARY_MAX_STORIES]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{len(stories)} new stories*"}}
    ]
    lines = []
    for item, matches in shown:
        title = escape(_cut(item.title, 200))
        link = safe_link(item.url)
        head = f"<{link}|{title}>" if link else title
        outlet = escape(titles.get(item.feed, item.feed))
        topics = _topics(matches)
        line = f"• {head} ({outlet}{f' · {item.language}' if item.language else ''}) · {topics}"
        lines.append(line)
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(line, SECTION_MAX)}}
        )
    if len(stories) > len(shown):
        more = f"…and {len(stories) - len(shown)} more: `reelwatch items --since 1d`"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
    text = f"{len(stories)} new stories: " + "; ".join(
        escape(_cut(item.title, 100)) for item, _ in shown
    )
    return SlackMessage(text=_cut(text, TEXT_MAX), blocks=blocks)


def _api_error(exc: Any) -> tuple[str, int | None, Mapping[str, Any]]:
    response = exc.response
    if isinstance(response, Mapping):  # slack-sdk hands a dict when the body was not JSON
        return "", response.get("status"), response.get("headers") or {}
    data = response.data if isinstance(response.data, Mapping) else {}
    return str(data.get("error") or ""), response.status_code, response.headers or {}


def _retry_after(headers: Mapping[str, Any]) -> float | None:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return float(raw)
            except (TypeError, ValueError):
                return None
    return None


class SlackBotSender:
    """chat.postMessage with a bot token; any channel the bot is in."""

    def __init__(self, token: str, base_url: str = DEFAULT_API_URL, timeout: int = 30):
        from slack_sdk import WebClient  # imported when used: it costs every CLI start 20 ms

        # No retry handlers: slack-sdk's connection-error retry re-sends a message Slack
        # may already have accepted. The outbox is the one place that retries.
        self._client = WebClient(token=token, base_url=base_url, timeout=timeout, retry_handlers=[])

    threads = True  # can reply in a thread and update a message

    def send(
        self, channel: str, message: SlackMessage, thread_ts: str | None = None
    ) -> dict[str, Any]:
        extra = {"thread_ts": thread_ts} if thread_ts else {}
        return self._call(
            "chat_postMessage", channel=channel, text=message.text,
            blocks=message.blocks, unfurl_links=False, unfurl_media=False, **extra,
        )  # fmt: skip

    def update(self, channel_id: str, ts: str, message: SlackMessage) -> dict[str, Any]:
        return self._call(
            "chat_update", channel=channel_id, ts=ts, text=message.text,
            blocks=message.blocks,
        )  # fmt: skip

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        from slack_sdk.errors import SlackApiError, SlackRequestError

        channel = str(kwargs.get("channel", ""))
        try:
            response = getattr(self._client, method)(**kwargs)
        except SlackApiError as exc:
            error, status, headers = _api_error(exc)
            if status == 429 or error == "ratelimited":
                raise DeliveryError(
                    "rate limited by Slack (429)",
                    channel=channel,
                    retry_after=_retry_after(headers),
                ) from None
            if error in PERMANENT_API_ERRORS:
                raise DeliveryError(
                    f"{PERMANENT_API_ERRORS[error]} ({error})", channel=channel, permanent=True,
                    credentials=error in CREDENTIAL_ERRORS,
                ) from None  # fmt: skip
            if (status and status >= 500) or not error:
                raise DeliveryError(f"Slack answered HTTP {status}", channel=channel) from None
            raise DeliveryError(f"Slack refused the message: {error}", channel=channel) from None
        except SlackRequestError:  # "Invalid URL detected": never reaches the network
            raise DeliveryError(
                "REELWATCH_SLACK_API_URL is not an http(s):// URL (quotes an env file kept?)",
                channel=channel, credentials=True,
            ) from None  # fmt: skip
        except OSError as exc:  # urllib's URLError, timeouts, refused connections
            raise DeliveryError(f"cannot reach Slack: {exc}", channel=channel) from None
        except ValueError:  # http.client: "Invalid header value b'Bearer <the token>'"
            raise DeliveryError(
                "REELWATCH_SLACK_BOT_TOKEN holds a line break or other control character "
                "(a secret file of two lines, or a CRLF?): set it to the token alone",
                channel=channel, credentials=True,
            ) from None  # fmt: skip
        except Exception as exc:  # anything else: its name, not its text (it may hold the token)
            raise DeliveryError(
                f"the Slack call failed: {type(exc).__name__}", channel=channel
            ) from None
        return dict(response.data) if isinstance(response.data, Mapping) else {}


class SlackWebhookSender:
    """An incoming webhook: one fixed channel, chosen when the webhook was created."""

    def __init__(self, url: str, timeout: int = 30):
        from slack_sdk.webhook import WebhookClient

        self._client = WebhookClient(url=url, timeout=timeout, retry_handlers=[])

    threads = False  # a webhook can neither reply in a thread nor update

    def send(self, channel: str, message: SlackMessage) -> dict[str, Any]:
        from slack_sdk.errors import SlackRequestError

        # an exception's text may carry the webhook URL, which is a secret: never shown
        try:
            response = self._client.send(
                text=message.text, blocks=message.blocks, unfurl_links=False, unfurl_media=False
            )
        except SlackRequestError:  # "Invalid URL detected: <the secret>"
            raise DeliveryError(
                "REELWATCH_SLACK_WEBHOOK_URL is not an https:// URL (quotes an env file "
                "kept?): set it to the address Slack gave the webhook",
                channel=channel, credentials=True,
            ) from None  # fmt: skip
        except OSError as exc:
            raise DeliveryError(
                f"cannot reach the Slack webhook: {type(exc).__name__}", channel=channel
            ) from None
        except Exception as exc:  # anything else: its name, not its text
            raise DeliveryError(
                f"the Slack webhook failed: {type(exc).__name__}", channel=channel
            ) from None
        status = response.status_code
        if status == 200:
            return {"ok": True}
        body = (response.body or "")[:200]
        if status in (403, 404, 410):
            raise DeliveryError(
                f"the webhook was revoked or deleted ({status} {body}); "
                "create a new one and set REELWATCH_SLACK_WEBHOOK_URL",
                channel=channel, credentials=True,
            )  # fmt: skip
        if status == 429:
            raise DeliveryError(
                "rate limited by Slack (429)", channel=channel,
                retry_after=_retry_after(response.headers or {}),
            )  # fmt: skip
        permanent = status == 400 and body in {"invalid_blocks", "no_text", "invalid_payload"}
        raise DeliveryError(
            f"webhook answered {status}: {body}", channel=channel, permanent=permanent
        )


class ConsoleSender:
    """No Slack configured: print a readable line per alert."""

    threads = False

    def __init__(self, stream: Any = None):
        self._stream = stream

    def send(self, channel: str, message: SlackMessage) -> dict[str, Any]:
        import sys

        print(f"ALERT {message.text}", file=self._stream or sys.stdout, flush=True)
        return {"ok": True}


def credential_of(channel: str) -> str:
    """What a delivery to the channel is sent with: the console (nothing), the webhook
    (its one channel, named "webhook") or the bot token (every other channel)."""
    return channel if channel in ("console", "webhook") else "bot"


@dataclass(frozen=True, slots=True)
class SlackSettings:
    """Slack's secrets and endpoints, from REELWATCH_* environment variables only."""

    webhook_url: str | None
    bot_token: str | None
    api_url: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlackSettings:
        env = os.environ if env is None else env
        return cls(
            webhook_url=env.get("REELWATCH_SLACK_WEBHOOK_URL") or None,
            bot_token=env.get("REELWATCH_SLACK_BOT_TOKEN") or None,
            api_url=env.get("REELWATCH_SLACK_API_URL") or DEFAULT_API_URL,
        )

    @property
    def transport(self) -> str:
        """bot (any channel), webhook (its one channel) or console (no Slack set up)."""
        if self.bot_token:
            return "bot"
        if self.webhook_url:
            return "webhook"
        return "console"

    def sender_for(self, channel: str) -> Any:
        credential = credential_of(channel)
        if credential == "console":
            return ConsoleSender()
        if credential == "webhook":
            if not self.webhook_url:
                raise DeliveryError("REELWATCH_SLACK_WEBHOOK_URL is not set", channel=channel)
            return SlackWebhookSender(self.webhook_url)
        if not self.bot_token:
            raise DeliveryError("REELWATCH_SLACK_BOT_TOKEN is not set", channel=channel)
        return SlackBotSender(self.bot_token, self.api_url)
