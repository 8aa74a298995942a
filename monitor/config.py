"""feeds.yaml: the pydantic models that describe it and the loader that points at its lines.

The models are the one description of the file; defaults live here and are
documented in feeds.yaml's comments. ruamel.yaml keeps the line and column of
every key so a refusal names the text to fix:

    feeds.yaml:14:5: feeds[3].interval: '15 minutes' is not a duration like 15m or 1h
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from monitor import USER_AGENT
from monitor.classify.engine import RuleError, RuleSet, TopicRule, WatchlistRule, compile_rules
from monitor.errors import ConfigError, ConfigProblem
from monitor.normalize import LANGUAGE_SLIPS, canonical_url, is_http_url, language_code

DEFAULT_CONFIG = "feeds.yaml"

_DURATION = re.compile(r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$")


def parse_duration(value: Any) -> timedelta:
    """'90s', '15m', '1h', '1h30m', '2d' -> timedelta."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match or not any(match.groups()):
        raise PydanticCustomError(
            "duration", "'{value}' is not a duration like 15m or 1h", {"value": str(value)}
        )
    d, h, m, s = (int(g or 0) for g in match.groups())
    return timedelta(days=d, hours=h, minutes=m, seconds=s)


def _at_least(minimum: timedelta, label: str):
    def check(value: timedelta) -> timedelta:
        if value < minimum:
            raise PydanticCustomError("too_short", f"must be at least {label}", {})
        return value

    return check


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _http_url(value: Any) -> str:
    if not isinstance(value, str) or not is_http_url(value.strip()):
        raise PydanticCustomError(
            "http_url", "'{value}' is not an http:// or https:// URL", {"value": str(value)}
        )
    return value.strip()


def _language(value: Any) -> str:
    code = language_code(value) if isinstance(value, str) else None
    if code is None:
        raise PydanticCustomError(
            "language",
            "'{value}' is not an ISO 639-1 language code like en or it{hint}",
            {"value": str(value), "hint": _slip(value)},
        )
    return code


def _slip(value: Any) -> str:
    code = str(value).strip().lower()[:2]
    return f" ({LANGUAGE_SLIPS[code]}?)" if code in LANGUAGE_SLIPS else ""


def _query(value: Any) -> dict[str, str]:
    """A query as {language or "all": query text}.

    A string is one query for every language; a list of keywords or phrases is
    their OR (what the foundation's feeds.yaml allowed); a mapping gives a query
    per language (ISO 639-1 code), with "all" for every language.
    """

    def one(v: Any) -> str:
        if isinstance(v, str) and v.strip():
            return v.strip()
        if isinstance(v, list) and v and all(isinstance(t, str) and t.strip() for t in v):
            return " OR ".join(f'"{t.strip().strip(chr(34))}"' for t in v)
        raise PydanticCustomError("query", "must be a query, or a list of keywords and phrases", {})

    if isinstance(value, dict):
        if not value:
            raise PydanticCustomError("query", "must name at least one language or all", {})
        out = {}
        for lang, v in value.items():
            key = str(lang)
            if key != "all" and language_code(key) != key:
                raise PydanticCustomError(
                    "query",
                    "'{lang}' is not all or an ISO 639-1 language code like en or it{hint}",
                    {"lang": key, "hint": _slip(key)},
                )
            out[key] = one(v)
        return out
    return {"all": one(value)}


HttpUrl = Annotated[str, BeforeValidator(_http_url)]
Language = Annotated[str, BeforeValidator(_language)]
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+$"
Name = Annotated[str, Field(pattern=_NAME_PATTERN)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Model):
    interval: Duration = timedelta(minutes=15)
    timeout: Duration = timedelta(seconds=30)
    user_agent: str = USER_AGENT
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    concurrency: int = Field(default=16, ge=1, le=256)
    per_host_concurrency: int = Field(default=2, ge=1, le=16)
    max_backoff: Duration = timedelta(hours=6)
    # feeds on loopback, RFC 1918 and other non-public addresses (intranet feeds);
    # REELWATCH_ALLOW_PRIVATE_NETWORKS=1 does the same
    allow_private_networks: bool = False

    _min_interval = field_validator("interval")(_at_least(timedelta(minutes=1), "1m"))
    _min_timeout = field_validator("timeout")(_at_least(timedelta(seconds=1), "1s"))


class FeedConfig(_Model):
    name: Name
    url: HttpUrl
    language: Language | None = None
    tags: list[str] = []
    interval: Duration | None = None
    timeout: Duration | None = None
    enabled: bool = True

    _min_interval = field_validator("interval")(
        lambda v: v if v is None else _at_least(timedelta(minutes=1), "1m")(v)
    )
    _min_timeout = field_validator("timeout")(
        lambda v: v if v is None else _at_least(timedelta(seconds=1), "1s")(v)
    )


class TopicConfig(_Model):
    label: str
    query: Annotated[dict[str, str], BeforeValidator(_query)]
    description: str | None = None
    min_score: float = Field(default=0.0, ge=0)
    requires: str | None = None  # assigned only to items that also match this topic
    hidden: bool = False  # a building block other topics use (#id); never assigned itself


class Entity(_Model):
    name: str = Field(min_length=1)
    aliases: list[Annotated[str, Field(min_length=1)]] = []


def _entities(value: Any) -> Any:
    # shorthand: a watchlist can be a bare list, and an entity a bare name
    if isinstance(value, list):
        value = {"entities": value}
    if isinstance(value, dict) and isinstance(value.get("entities"), list):
        value = dict(value)
        value["entities"] = [{"name": e} if isinstance(e, str) else e for e in value["entities"]]
    return value


class Watchlist(_Model):
    label: str | None = None
    entities: list[Entity]


class SlackRoute(_Model):
    topics: list[str] = []  # items matching any of these topics...
    feeds: list[str] = []  # ...and, when given, coming from one of these feeds
    channel: str
    min_score: float | None = None  # default: slack.min_score


class SlackConfig(_Model):
    # Where alerts go when a bot token is set (REELWATCH_SLACK_BOT_TOKEN).
    # A webhook (REELWATCH_SLACK_WEBHOOK_URL) posts to its own fixed channel.
    default_channel: str | None = None
    min_score: float = Field(default=0.0, ge=0)
    burst: int = Field(default=10, ge=1)  # more alerts than this for a channel at once: a summary
    routes: list[SlackRoute] = []


def digest_problems(digest: DigestConfig) -> Iterator[tuple[str, str]]:
    """What is wrong with a digest's recipients, timezone, schedule or subject, as
    (key, message)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from apscheduler.triggers.cron import CronTrigger

    if not digest.to:
        yield "to", "lists no one: add the addresses it goes to, like to: [news@example.org]"
    seen: dict[str, int] = {}
    for i, address in enumerate(digest.to):
        if (first := seen.setdefault(address.casefold(), i)) != i:
            yield "to", (f"lists {digest.to[first]!r} twice (as {address!r}): it would get "
                         "each digest twice")  # fmt: skip
    try:
        tz = ZoneInfo(digest.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        yield "timezone", f"'{digest.timezone}' is not a timezone like Europe/Rome or UTC"
        tz = ZoneInfo("UTC")
    try:
        CronTrigger.from_crontab(digest.schedule, timezone=tz)
    except ValueError as exc:
        yield (
            "schedule",
            (
                f"'{digest.schedule}' is not cron text like '0 8 * * mon' "
                f"(minute hour day month weekday): {exc}"
            ),
        )
    sample = datetime(2026, 1, 5, tzinfo=tz)
    try:
        digest.subject.format(start=sample, end=sample, count=0, name="weekly")
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        yield (
            "subject",
            (
                f"{exc!s} in '{digest.subject}': use {{start:%d %b}}, {{end:%d %b}}, {{count}}"
                " or {name}"
            ),
        )


class DigestConfig(_Model):
    to: list[Annotated[str, Field(pattern=_EMAIL_PATTERN)]]
    topics: list[str] = []
    schedule: str = "0 8 * * mon"
    timezone: str = "UTC"
    subject: str = "AI in entertainment: week of {start:%d %b}"
    language: Literal["en", "it", "es", "fr", "de"] = "en"


class StoriesConfig(_Model):
    # Reports of one event become one story: one alert, later reports in its thread.
    window: Duration = timedelta(hours=72)  # a story takes new reports this long
    similarity: float = Field(default=0.5, gt=0, le=1)  # word overlap of near-duplicates
    min_shared_entities: int = Field(default=2, ge=1)  # names two reports must share

    def rules(self) -> Any:
        from monitor.stories import StoryRules

        return StoryRules(self.window, self.similarity, self.min_shared_entities)


class Config(_Model):
    defaults: Defaults = Defaults()
    feeds: list[FeedConfig] = []
    topics: dict[Name, TopicConfig] = {}
    watchlists: dict[Name, Annotated[Watchlist, BeforeValidator(_entities)]] = {}
    slack: SlackConfig = SlackConfig()
    digests: dict[Name, DigestConfig] = {}
    stories: StoriesConfig = StoriesConfig()

    def interval(self, feed: FeedConfig) -> timedelta:
        return feed.interval or self.defaults.interval

    def gate(self) -> str | None:
        """The topic the others require (ai_entertainment in the default pack), if one."""
        required = {t.requires for t in self.topics.values() if t.requires}
        return required.pop() if len(required) == 1 else None

    def timeout(self, feed: FeedConfig) -> timedelta:
        return feed.timeout or self.defaults.timeout

    def rules(self) -> RuleSet:
        """The topics and watchlists as the classifier takes them (hashable)."""
        return RuleSet(
            topics=tuple(
                TopicRule(tid, t.label, tuple(t.query.items()), t.min_score, t.requires, t.hidden)
                for tid, t in self.topics.items()
            ),
            watchlists=tuple(
                WatchlistRule(wid, tuple((e.name, tuple(e.aliases)) for e in w.entities))
                for wid, w in self.watchlists.items()
            ),
        )

    def feed(self, name: str) -> FeedConfig | None:
        return next((f for f in self.feeds if f.name == name), None)


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    return Path(explicit or os.environ.get("REELWATCH_CONFIG") or DEFAULT_CONFIG)


@dataclasses.dataclass(frozen=True, slots=True)
class StartRefusal:
    """feeds.yaml refused at start: its problems, and when the copy run instead was applied."""

    problems: ConfigError
    applied_at: datetime


def applied_key(path: str | os.PathLike[str]) -> str:
    """Where the text applied from feeds.yaml at `path` is kept: the path made absolute,
    its symlinks not followed. A Kubernetes ConfigMap's feeds.yaml resolves into a
    directory made anew at every mount and update (..2026_12_04_10_00_00.1234), a
    deploy's `current` link into the release's: resolved, no restart would find it."""
    return os.path.abspath(path)


def load_config(path: str | os.PathLike[str], *, empty_ok: bool = False) -> Config:
    """Read and validate feeds.yaml; raise ConfigError naming every problem's line.
    An empty file is refused (a service reading one would stop monitoring without a
    word) unless `empty_ok`: a file `feeds add` is about to fill."""
    return read_config(path, empty_ok=empty_ok)[0]


def read_config(path: str | os.PathLike[str], *, empty_ok: bool = False) -> tuple[Config, str]:
    """load_config, and the text it read."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (set --config or REELWATCH_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = data[exc.start : exc.start + 1].hex()
        raise ConfigError(
            [ConfigProblem(str(path), line, column, "", f"byte 0x{byte} is not UTF-8: save "
                           "the file as UTF-8 (an editor's encoding setting)")]
        ) from None  # fmt: skip
    return parse_config(text, str(path), empty_ok=empty_ok), text


def parse_config(
    text: str, filename: str = DEFAULT_CONFIG, *, fast: bool = True, empty_ok: bool = False
) -> Config:
    config = _parse_valid(text) if fast else None
    if config is not None:
        return config
    try:
        yaml = YAML(typ="rt")
        yaml.preserve_quotes = True  # to point inside a quoted query at the error
        data = yaml.load(text)
    except YAMLError as exc:
        raise ConfigError([_yaml_problem(filename, text, exc)]) from None
    if (data is None or data == {}) and empty_ok:
        return Config()
    if data is None or data == {}:
        raise ConfigError(
            [ConfigProblem(filename, 1, 1, "", "the file is empty: it needs feeds: and topics: "
                           "(the shipped feeds.yaml shows them)")]
        )  # fmt: skip
    if not isinstance(data, CommentedMap):
        raise ConfigError(
            [ConfigProblem(filename, 1, 1, "", "the file must be a mapping with feeds: and "
                           "topics:")]
        )  # fmt: skip
    # what YAML reads without a word, but not as the user meant: a pasted secret, a
    # value that starts with # (a comment to YAML: `default_channel: #ai-news` is empty)
    found = {p.key: p for p in _suspicious(filename, text, data)}
    try:
        config = Config.model_validate(_plain(data))
    except ValidationError as exc:
        problems = [*found.values()] + [
            p for p in _dedupe(_problem(filename, text, data, e) for e in exc.errors())
            if p.key not in found
        ]  # fmt: skip
        raise ConfigError(sorted(problems, key=lambda p: (p.line, p.column))) from None
    problems = [*found.values(), *_cross_checks(filename, data, config)]
    if problems:  # a feed URL's password is shown nowhere, these messages included
        raise ConfigError([dataclasses.replace(p, message=_redacted(p.message)) for p in problems])
    return config


def _yaml_problem(filename: str, text: str, exc: YAMLError) -> ConfigProblem:
    """What ruamel.yaml could not read, where, in words a user acts on."""
    if isinstance(exc, ReaderError):  # a character YAML refuses, anywhere in the file
        line, col = _line_column(text, exc.position)
        char = exc.character  # its code (an int), or the character
        code = f"U+{char if isinstance(char, int) else ord(char[:1] or chr(0)):04X}"
        return ConfigProblem(
            filename, line, col, "", f"the control character {code} is not allowed: delete it"
        )
    if not isinstance(exc, MarkedYAMLError):
        return ConfigProblem(filename, 1, 1, "", f"YAML: {_redacted(str(exc))}")
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    if isinstance(exc, DuplicateKeyError):  # its text quotes both values whole
        key = re.match(r'found duplicate key "(.*?)" with value', exc.problem or "")
        name = key.group(1) if key else "?"
        first = exc.context_mark.line + 1 if exc.context_mark else line
        return ConfigProblem(
            filename, line, col, "", f"duplicate key {name!r}: the mapping that starts on "
            f"line {first} has it already (a key is given once: merge the two)",
        )  # fmt: skip
    message = " ".join(p for p in (exc.context, exc.problem) if p)
    hint = next((h for pattern, h in _YAML_HINTS if pattern in message), "")
    return ConfigProblem(filename, line, col, "", f"YAML syntax: {_redacted(message)}{hint}")


_YAML_HINTS = (
    ("mapping values are not allowed here", " (a value holding ': ' must be quoted: "
     "label: 'Deals: more')"),
    ("expected <block end>", " (check the indentation of this line and the ones above; "
     "a query starting with a quote must be quoted whole: '\"a phrase\" OR word')"),
    ("found character '\\t'", " (indent with spaces, not tabs)"),
)  # fmt: skip


def _line_column(text: str, offset: int) -> tuple[int, int]:
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


# Secrets come from the environment; one pasted in feeds.yaml would be printed, logged
# and posted wherever the file is shown.
_SECRET = re.compile(
    r"\bxox[abposre]-\d+-[A-Za-z0-9-]+|\bxoxe\.xox[bp]-\d+-\S+|\bxapp-\d-[A-Za-z0-9-]+"
    r"|https?://hooks\.slack\.com/\S+"
)
_PASSWORD = re.compile(r"(://[^/\s:@]*):[^@\s/]+@")  # a feed URL's user:password@
_SECRET_KEY = re.compile(r"token|password|passwd|secret|webhook|api_?key", re.I)


def _redacted(text: str) -> str:
    return _PASSWORD.sub(r"\1:***@", _SECRET.sub("[secret removed]", text))


def _suspicious(filename: str, text: str, data: Any) -> Iterator[ConfigProblem]:
    """Problems YAML and the models let through: a secret pasted as any value, and a
    value starting with # (YAML reads an empty value and a comment)."""
    lines = text.splitlines()
    stack: list[tuple[Any, tuple]] = [(data, ())]
    while stack:
        node, loc = stack.pop()
        if isinstance(node, CommentedMap):  # a merged key (<<: *base) is its anchor's
            entries = [(k, v, node.lc.key(k), node.lc.value(k))
                       for k, v in node.non_merged_items()]  # fmt: skip
        elif isinstance(node, CommentedSeq):
            entries = [(i, v, node.lc.item(i), node.lc.item(i)) for i, v in enumerate(node)]
        else:
            continue
        for key, value, (kline, kcol), (vline, vcol) in entries:
            here = (*loc, key)
            if isinstance(value, str) and _SECRET.search(value):
                yield ConfigProblem(filename, vline + 1, vcol + 1, _key_path(here), _SECRET_HELP)
            elif value is None and (key in _HASH_VALUES or loc[-1:] == ("query",)):
                rest = lines[kline][kcol:].partition(":")[2].lstrip() if kline < len(lines) else ""
                if rest[:1] == "#" and rest[1:2].strip():  # "#ai-news", not "# a comment"
                    quote = "'" if '"' in rest else '"'
                    yield ConfigProblem(
                        filename, kline + 1, kcol + 1, _key_path(here),
                        f"is empty: YAML reads {rest!r} as a comment; write it in quotes: "
                        f"{key}: {quote}{rest}{quote}",
                    )  # fmt: skip
            else:
                stack.append((value, here))


# keys whose values start with # (a channel, a topic reference): YAML's comment trap
_HASH_VALUES = frozenset({"default_channel", "channel", "query"})

_SECRET_HELP = (
    "looks like a Slack token or webhook URL: secrets do not belong in feeds.yaml (it "
    "is printed, logged, shared); remove it and set REELWATCH_SLACK_BOT_TOKEN or "
    "REELWATCH_SLACK_WEBHOOK_URL in the environment"
)


def _parse_valid(text: str) -> Config | None:
    """The config of a valid file, read by the C scanner (ruamel.yaml.clib), several times
    faster than the round-trip loader; None at the first problem, which the round-trip
    loader then reads again to name its line and column. Both resolve YAML 1.2 alike."""
    if _SECRET.search(text):
        return None
    try:
        data = YAML(typ="safe").load(text)
        if not isinstance(data, dict) or not data or _has_empty_value(data):
            return None
        config = Config.model_validate(_plain(data))
        # the checks name positions only once they find a problem: any is left to the
        # round-trip loader
        if next(_cross_checks("", data, config), None) is None:
            return config
    except Exception:  # whatever it is, the careful reading says it well
        return None
    return None


def _has_empty_value(node: Any) -> bool:
    """Whether a key has no value: the careful reading says whether it was meant so."""
    if isinstance(node, dict):
        return any(v is None or _has_empty_value(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_empty_value(v) for v in node)
    return False


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _key_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _position(data: Any, loc: tuple[Any, ...], *, at_key: bool = False) -> tuple[int, int, tuple]:
    """Line and column (0-based) of the deepest node of `loc` present in the YAML, and its loc."""
    node, line, col, found = data, 0, 0, ()
    for i, part in enumerate(loc):
        if isinstance(node, CommentedMap) and part in node:
            last = i == len(loc) - 1
            if part in node.lc.data:  # else merged (<<: *base): the mapping's own place
                line, col = node.lc.key(part) if (at_key and last) else node.lc.value(part)
            node, found = node[part], (*found, part)
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line, col = node.lc.item(part)
            node, found = node[part], (*found, part)
        else:
            break
    return line, col, found


# error types whose messages we wrote ourselves and that already quote the value
_OWN_MESSAGES = {"duration", "http_url", "language", "query", "too_short"}


def _problem(filename: str, text: str, data: Any, err: Any) -> ConfigProblem:
    loc = tuple(err["loc"])
    kind = err["type"]
    value = err.get("input")
    empty = value is None and kind not in ("missing", "extra_forbidden")
    line, col, found = _position(data, loc, at_key=kind == "extra_forbidden" or empty)
    message = err["msg"]
    if kind == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}"
        if _SECRET_KEY.search(str(loc[-1])):
            message += (
                ": secrets come from the environment (REELWATCH_SLACK_BOT_TOKEN, "
                "REELWATCH_SLACK_WEBHOOK_URL, REELWATCH_SMTP_PASSWORD), never from feeds.yaml"
            )
        found = loc
    elif kind == "missing":
        message = f"missing required key {loc[-1]!r}"
        found = loc
    elif empty and found == loc:
        message = "is empty: give it a value (or delete the line)"
    elif kind == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern")
        message = _PATTERN_MESSAGES.get(pattern, message) + f" (got {value!r})"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = "must be keys with values, one per line (name: value)"
        if isinstance(value, str | int | float | bool):
            message += f", not {value!r}"
    elif kind not in _OWN_MESSAGES:
        message = message.removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
        if isinstance(value, str | int | float | bool):
            message += f" (got {value!r})"
    return ConfigProblem(filename, line + 1, col + 1, _key_path(found or loc), _redacted(message))


_PATTERN_MESSAGES = {
    _NAME_PATTERN: "names are letters, digits and - _ . (no spaces; up to 64 characters, "
    "starting with a letter or digit)",
    _EMAIL_PATTERN: "is not an email address",
}


def _node(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        data = data[part]
    return data


def _dedupe(problems: Iterator[ConfigProblem]) -> list[ConfigProblem]:
    seen: set[tuple[int, int, str]] = set()
    out = []
    for p in problems:
        if (p.line, p.column, p.key) not in seen:
            seen.add((p.line, p.column, p.key))
            out.append(p)
    return out


def _topic_problem(config: Config, topic: str) -> str | None:
    """Why a route or digest cannot take items of `topic`, if it cannot."""
    if topic not in config.topics:
        return f"unknown topic {topic!r}"
    if config.topics[topic].hidden:
        return (
            f"topic {topic!r} is hidden (a building block other topics use as #{topic}) and "
            "is never given to an item: name a topic that uses it"
        )
    return None


def _cross_checks(filename: str, data: Any, config: Config) -> Iterator[ConfigProblem]:
    def at(loc: tuple, message: str) -> ConfigProblem:
        line, col, _ = _position(data, loc)
        return ConfigProblem(filename, line + 1, col + 1, _key_path(loc), message)

    names: dict[str, int] = {}
    urls: dict[str, int] = {}
    for i, feed in enumerate(config.feeds):
        if feed.name in names:
            yield at(
                ("feeds", i, "name"),
                f"duplicate feed name {feed.name!r} (also feeds[{names[feed.name]}])",
            )
        names.setdefault(feed.name, i)
        key = canonical_url(feed.url) or feed.url
        if key in urls:
            yield at(
                ("feeds", i, "url"), f"duplicate feed URL {feed.url!r} (also feeds[{urls[key]}])"
            )
        urls.setdefault(key, i)
    try:
        compile_rules(config.rules())
    except RuleError as exc:
        loc = exc.where
        line, col, found = _position(data, loc)
        if found == loc and exc.position is not None and loc[-1] != "requires":
            node = _node(data, loc)
            style = getattr(node, "style", None)
            if style in ('"', "'"):
                col += 1 + exc.position  # a quoted query on one line: point at the spot
            elif style is None and isinstance(node, str) and "\n" not in node:
                col += exc.position
        yield ConfigProblem(
            filename, line + 1, col + 1, _key_path(found or loc), str(exc).split(": ", 1)[1]
        )
    feed_names = {f.name for f in config.feeds}
    for i, route in enumerate(config.slack.routes):
        if not route.topics and not route.feeds:
            yield at(("slack", "routes", i), "a route needs topics: or feeds:")
        for j, topic in enumerate(route.topics):
            if problem := _topic_problem(config, topic):
                yield at(("slack", "routes", i, "topics", j), problem)
        for j, feed in enumerate(route.feeds):
            if feed not in feed_names:
                yield at(("slack", "routes", i, "feeds", j), f"unknown feed {feed!r}")
    for name, digest in config.digests.items():
        for j, topic in enumerate(digest.topics):
            if problem := _topic_problem(config, topic):
                yield at(("digests", name, "topics", j), problem)
        for key, problem in digest_problems(digest):
            yield at(("digests", name, key), problem)
