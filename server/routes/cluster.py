"""``GET /api/cluster``: the live instances sharing this database, their heartbeats, and
which connectors each runs. Any instance answers with the same picture."""

from __future__ import annotations

from collections import defaultdict

from quart import Blueprint, Response

from engine.storage import cluster as sql

from ..context import engine
from ..responses import json_response

bp = Blueprint("cluster", __name__)


@bp.get("/api/cluster")
async def cluster() -> Response:
    eng = engine()
    ttl = eng.settings.lease_ttl
    instances = await eng.db.run(sql.instance_rows, ttl)
    leases = await eng.db.run(sql.lease_rows)
    running: dict[str, list[str]] = defaultdict(list)
    for lease in leases:
        if lease["owner"] and lease["live"]:
            running[lease["owner"]].append(lease["connector_id"])
    me = eng.coordinator.instance_id
    return json_response(
        {
            "instance_id": me,
            "instances": [
                {**row, "self": row["instance_id"] == me, "connectors": running[row["instance_id"]]}
                for row in instances
            ],
            "leases": leases,
        }
    )
