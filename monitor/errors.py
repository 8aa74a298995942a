"""The exception tree. Every message names what a user can act on.

ReelwatchError
├── ConfigError      feeds.yaml is refused: one line per problem, `file:line:col: key: message`
├── FeedError        one feed failed; carries its name and URL
│   ├── FetchError   timeout, too large, bad status, redirect trouble
│   └── ParseError   not a feed, refused markup
└── DeliveryError    one alert could not be delivered; `permanent` says whether to retry
"""

from __future__ import annotations

from dataclasses import dataclass


class ReelwatchError(Exception):
    """Base of every error reelwatch raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    file: str
    line: int  # 1-based
    column: int  # 1-based
    key: str  # e.g. feeds[3].interval ('' for the whole file)
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(ReelwatchError):
    def __init__(self, problems: list[ConfigProblem] | str):
        if isinstance(problems, str):
            self.problems: list[ConfigProblem] = []
            text = problems
        else:
            self.problems = problems
            text = "\n".join(str(p) for p in problems)
        super().__init__(text)


class FeedError(ReelwatchError):
    def __init__(self, message: str, *, feed: str = "", url: str = ""):
        self.feed = feed
        self.url = url
        self.reason = message
        super().__init__(message)

    def __str__(self) -> str:
        if self.feed:
            return f"feed '{self.feed}' ({self.url}): {self.reason}"
        return self.reason


class FetchError(FeedError):
    def __init__(
        self,
        message: str,
        *,
        feed: str = "",
        url: str = "",
        status: int | None = None,
        retry_after: float | None = None,
        gone: bool = False,
    ):
        super().__init__(message, feed=feed, url=url)
        self.status = status
        self.retry_after = retry_after
        self.gone = gone
        self.elapsed_ms = 0


class ParseError(FeedError):
    pass


class DeliveryError(ReelwatchError):
    def __init__(
        self,
        message: str,
        *,
        channel: str = "",
        permanent: bool = False,
        retry_after: float | None = None,
        credentials: bool = False,  # the token or webhook itself refused: every channel alike
    ):
        self.channel = channel
        self.permanent = permanent or credentials
        self.retry_after = retry_after
        self.credentials = credentials
        super().__init__(message)
