"""Structured one-line logs shared by every process.

Each line carries the component and, where the caller passes them, Kafka coordinates
(``topic``, ``partition``, ``offset``) or a ``source``: ``log.info("flushed", extra={"topic": t,
"partition": p, "rows": n})``. ``text`` format is for people, ``json`` for log shippers.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

# LogRecord attributes that are not user-supplied context.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


class JsonFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "component": ..., "logger": ..., "msg": ..., **context}``."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_context(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``2026-11-22T06:00:00Z INFO  sink  flushed  topic=events.canonical partition=3 rows=500``."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        context = " ".join(f"{k}={v}" for k, v in _context(record).items())
        line = f"{stamp} {record.levelname:<7} {self.component:<8} {record.getMessage()}"
        if context:
            line = f"{line}  {context}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def configure_logging(component: str, level: str = "INFO", fmt: str = "text") -> None:
    """Send every log line of this process to stderr in one format, tagged with ``component``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(component) if fmt == "json" else TextFormatter(component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Client libraries are chatty at INFO; their warnings still come through.
    for noisy in (
        "botocore",
        "boto3",
        "s3fs",
        "aiobotocore",
        "urllib3",
        "aiokafka",
        "faust",
        "httpx",
        "httpcore",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
