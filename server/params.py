"""Query-string parameters: integers with limits, and the allow-list of names."""

from __future__ import annotations

from quart import request

from .validation import error


def int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise error(["query", name], "must be an integer", "type_error") from None
    if not lo <= value <= hi:
        raise error(["query", name], f"must be between {lo} and {hi}")
    return value


def only_args(allowed: set[str]) -> None:
    for name in request.args:
        if name not in allowed:
            raise error(["query", name], "unknown query parameter", "extra_forbidden")
