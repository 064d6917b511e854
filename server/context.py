"""How request handlers reach the engine, and request-body helpers."""

from __future__ import annotations

from typing import Any

import orjson
import trio
from quart import current_app, request

from engine.engine import Engine

from .validation import error

ENGINE_KEY = "sluice.engine"


def background() -> trio.Nursery:
    """The app's nursery (quart-trio), for tasks that outlive one handler step."""
    nursery: trio.Nursery = current_app.nursery  # type: ignore[attr-defined]
    return nursery


def engine() -> Engine:
    found: Engine = current_app.extensions[ENGINE_KEY]
    return found


async def json_body(*, empty: Any = ...) -> Any:
    """The request body parsed as JSON, or a 422 naming ``body``. An empty body is an
    error unless ``empty`` gives the value to use instead."""
    raw = await request.get_data(cache=False)
    if empty is not ... and not raw.strip():
        return empty
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise error(["body"], "request body is not valid JSON", "json_invalid") from None
    if b"\\u0000" in raw:
        # PostgreSQL stores no NUL in text or jsonb; the OpenAPI schema says so of every
        # string (server.contract), so this is refused here, naming where it is.
        path = _nul_path(body, ["body"])
        if path is not None:
            raise error(path, "text must not contain \\u0000 (PostgreSQL cannot store it)")
    return body


def _nul_path(value: Any, loc: list[str | int]) -> list[str | int] | None:
    if isinstance(value, str):
        return loc if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return [*loc, key]
            found = _nul_path(item, [*loc, key])
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, [*loc, index])
            if found is not None:
                return found
    return None
