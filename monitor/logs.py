"""The service's log lines: key=value text or JSON, on stderr, in every process that logs
(the storage process of storage.remote sets itself up as the command did)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime

settings: tuple[str, str] | None = None  # (format, level) as the command set them up


class _KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="seconds")
        text = f"{ts} {record.levelname.lower()} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created).astimezone().isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)  # monitor.metrics.log_fields: one per key
        if isinstance(fields, dict):
            out["msg"] = getattr(record, "event", out["msg"])
            out.update((k, v) for k, v in fields.items() if k not in out)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(fmt: str, level: str) -> None:
    global settings
    settings = (fmt, level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "apscheduler", "watchfiles", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # slack-sdk logs a failed request with its URL (a webhook's is its secret); the outbox
    # says every failure itself, without it
    logging.getLogger("slack_sdk").setLevel(logging.CRITICAL)
