"""``/api/postgres/status``: is the database there, and how much does it hold."""

from __future__ import annotations

from quart import Blueprint, Response

from engine.storage import queries

from ..context import engine
from ..responses import json_response

bp = Blueprint("system", __name__)


@bp.get("/api/postgres/status")
async def postgres_status() -> Response:
    db = engine().db
    info = await db.run(queries.server_info)
    tables = await db.run(queries.table_counts)
    return json_response(
        {
            "status": "connected",
            "database": info["database"],
            "version": info["version"],
            "embedded": db.embedded,
            "tables": tables,
        }
    )
