"""Logging set-up: readable text lines on stderr, level from ``SLUICE_LOG_LEVEL``."""

from __future__ import annotations

import logging
import os

from engine.redact import RedactingFilter


def configure_logging(level: str | None = None) -> None:
    level = (level or os.environ.get("SLUICE_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    # httpx logs every request URL at INFO, query strings included.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # pgserver logs every command it runs, with full output, at INFO.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
