"""Logging set-up: readable text lines on stderr (or JSON lines with
``SLUICE_LOG_FORMAT=json``), level from ``SLUICE_LOG_LEVEL``, secrets redacted."""

from __future__ import annotations

import logging
import os
import re

import orjson

from engine.redact import RedactingFilter, redact_text

_CONNECTOR = re.compile(r"\b(conn_[0-9a-f]+)\b")
_instance = "-"


def set_instance(instance_id: str) -> None:
    """Name this process's cluster instance in every log line from now on."""
    global _instance
    _instance = instance_id


class InstanceFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.instance = _instance
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and ``connector_id``
    whenever the line is about a connector."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "instance": getattr(record, "instance", _instance),
            "message": message,
        }
        found = getattr(record, "connector_id", None) or _CONNECTOR.search(message)
        if found:
            line["connector_id"] = found if isinstance(found, str) else found.group(1)
        if record.exc_info:
            line["exception"] = redact_text(self.formatException(record.exc_info))
        return orjson.dumps(line).decode()


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    level = (level or os.environ.get("SLUICE_LOG_LEVEL") or "INFO").upper()
    fmt = fmt or os.environ.get("SLUICE_LOG_FORMAT") or "text"
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s [%(instance)s] %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(InstanceFilter())
        handler.addFilter(RedactingFilter())
        if fmt == "json":
            handler.setFormatter(JsonFormatter())
    # httpx logs every request URL at INFO, query strings included.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # pgserver logs every command it runs, with full output, at INFO.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
