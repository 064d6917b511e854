"""``WS /api/realtime``: every committed record, one ``data_update`` JSON text frame each.

The subscription is a plain context manager, so it is released when the client leaves
and Quart cancels the handler. A subscriber that falls behind is sent
``{"type": "lagged"}`` and closed with 1008; on server shutdown subscribers are closed
with 1001 (going away).
"""

from __future__ import annotations

import orjson
from quart import Blueprint, websocket

from ..context import engine

bp = Blueprint("realtime", __name__)

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008


@bp.websocket("/api/realtime")
async def realtime() -> None:
    hub = engine().hub
    await websocket.accept()
    with hub.subscribe() as sub:
        await websocket.send(orjson.dumps({"type": "connected"}).decode())
        async for frames in sub:
            for frame in frames:
                await websocket.send(frame)
        reason = sub.closed_reason
    if reason == "lagged":
        notice = {"type": "lagged", "detail": "subscriber fell behind; reconnect to resume"}
        await websocket.send(orjson.dumps(notice).decode())
        await websocket.close(CLOSE_POLICY, "lagged")
    else:
        await websocket.close(CLOSE_GOING_AWAY, "server shutting down")
