"""Structured logs: one JSON object per line, with only the fields careloop chooses to log.

Log calls pass counts, names of sources and paths (never query strings) as ``extra``; the formatter
keeps only the keys in `SAFE_FIELDS`, so a personal value passed by mistake is dropped, not written.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

SAFE_FIELDS = (
    "path",
    "status",
    "reason",
    "source",
    "stored",
    "duplicates",
    "quarantined",
    "ms",
    "events",
    "stream",
    "workspace",
    # access decisions (careloop.privacy.auth.on_access): account names and route templates, never values
    "actor",
    "role",
    "route",
    "permission",
    "outcome",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in SAFE_FIELDS:
            if key in record.__dict__:
                out[key] = record.__dict__[key]
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = record.exc_info[0].__name__  # the type only: messages may quote data
        return orjson.dumps(out, default=str).decode()


def configure(level: str = "INFO") -> None:
    """JSON lines on stderr for careloop's loggers (the server calls this once)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("careloop")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
