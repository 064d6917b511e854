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
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise error(["body"], "request body is not valid JSON", "json_invalid") from None
