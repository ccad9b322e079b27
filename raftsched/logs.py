"""Logging set-up: quiet by default (warnings), one line per event, `json` for machines."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

__all__ = ["setup_logging"]

_EXTRA_KEYS = ("node", "job", "run", "term", "attempt", "peer", "reason", "suppressed")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _EXTRA_KEYS:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


def setup_logging(level: str = "warning", fmt: str = "text", node_id: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        prefix = f"{node_id} " if node_id else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s"))
    handler.formatter.converter = __import__("time").gmtime  # type: ignore[union-attr]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # PySyncObj logs every lost connection at ERROR; it is routine in a cluster.
    logging.getLogger("pysyncobj").setLevel(max(logging.CRITICAL if level != "debug" else 0, root.level))
