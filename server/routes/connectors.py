"""``/api/connectors``: create, list, inspect, start and stop connectors, and read the
records a connector stored."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import attrs
from quart import Blueprint, Response, request

from engine.errors import NotFound
from engine.models import ConnectorSpec, ConnectorStatus
from engine.storage import connectors as sql
from engine.storage import queries
from engine.storage.records import TABLES

from ..connector_specs import build_spec
from ..context import engine, json_body
from ..contract import structure_query
from ..responses import json_response
from ..schemas import (
    ConnectorDataQuery,
    DeleteQuery,
    ListingQuery,
    connector_json,
    record_json,
    status_json,
)

bp = Blueprint("connectors", __name__)


@bp.post("/api/connectors")
async def create_connector() -> Response:
    eng = engine()
    connector_id = "conn_" + secrets.token_hex(8)
    spec = build_spec(await json_body(), connector_id, eng.secrets, eng.egress)
    stored = await eng.db.run(sql.insert_connector, spec)
    return json_response(connector_json(stored, "inactive", eng.secrets), 201)


@bp.put("/api/connectors/<connector_id>")
async def update_connector(connector_id: str) -> Response:
    """Change any subset of the creation fields; a running connector is replaced (the old
    one stops before the new one starts, never two at once)."""
    eng = engine()
    raw = await json_body()
    existing = await _spec(connector_id)
    spec = build_spec(raw, connector_id, eng.secrets, eng.egress, existing)
    stored = await eng.db.run(sql.update_connector, spec)
    if eng.manager.is_running(connector_id):
        await eng.manager.restart(connector_id)
    statuses = await eng.db.run(sql.status_names)
    return json_response(connector_json(stored, _status_word(connector_id, statuses), eng.secrets))


@bp.delete("/api/connectors/<connector_id>")
async def delete_connector(connector_id: str) -> Response:
    query: DeleteQuery = structure_query(request.args, DeleteQuery)
    eng = engine()
    await _spec(connector_id)
    await eng.manager.remove(connector_id)
    if not await eng.db.run(sql.delete_connector, connector_id, query.purge_data):
        raise NotFound(f"connector {connector_id} not found")
    return Response(b"", status=204)


@bp.get("/api/connectors")
async def list_connectors() -> Response:
    eng = engine()
    specs = await eng.db.run(sql.list_connectors)
    stored = await eng.db.run(sql.status_names)
    data = [connector_json(s, _status_word(s.connector_id, stored), eng.secrets) for s in specs]
    return json_response({"data": data, "count": len(data)})


@bp.get("/api/connectors/statuses")
async def connector_statuses() -> Response:
    """Every connector's status in one answer (the console's table of them all): live for
    those this process runs, else as last persisted by the instance that ran them."""
    manager = engine().manager
    statuses = {s.connector_id: s for s in await engine().db.run(sql.list_statuses)}
    for connector_id in manager.known():
        if connector_id in statuses:
            statuses[connector_id] = manager.status(connector_id)
    data = [status_json(s) for s in statuses.values()]
    return json_response({"data": data, "count": len(data)})


@bp.get("/api/connectors/<connector_id>")
async def get_connector(connector_id: str) -> Response:
    spec = await _spec(connector_id)
    stored = await engine().db.run(sql.status_names)
    return json_response(connector_json(spec, _status_word(connector_id, stored), engine().secrets))


@bp.post("/api/connectors/<connector_id>/start")
async def start_connector(connector_id: str) -> Response:
    status = await engine().manager.start(connector_id)
    if status is None:  # another instance of the cluster took its lease
        return json_response({"connector_id": connector_id, "status": "running"})
    if status.status == "error":
        return json_response(
            {"connector_id": connector_id, "status": "error", "detail": status.last_error}, 409
        )
    word = "running" if status.status in ("connecting", "reconnecting") else status.status
    return json_response({"connector_id": connector_id, "status": word})


@bp.post("/api/connectors/<connector_id>/stop")
async def stop_connector(connector_id: str) -> Response:
    await engine().manager.stop(connector_id)
    return json_response({"connector_id": connector_id, "status": "stopped"})


@bp.get("/api/connectors/<connector_id>/status")
async def connector_status(connector_id: str) -> Response:
    body = status_json(await _status(connector_id))
    manager = engine().manager
    accounting = manager.accounting(connector_id)
    if accounting is not None:
        body["accounting"] = accounting
    actor = manager.actor_statistics(connector_id)
    if actor is not None:
        body["actor"] = attrs.asdict(actor)  # buffer use, pings, requests: the detail
    return json_response(body)


@bp.get("/api/connectors/<connector_id>/gaps")
async def connector_gaps(connector_id: str) -> Response:
    """Stretches of time in which the connector may have missed data, newest first."""
    return await _listing(connector_id, sql.list_gaps)


@bp.get("/api/connectors/<connector_id>/errors")
async def connector_errors(connector_id: str) -> Response:
    """Connection and exchange errors, newest first."""
    return await _listing(connector_id, sql.list_errors)


@bp.get("/api/connectors/<connector_id>/rejected")
async def connector_rejected(connector_id: str) -> Response:
    """Dead letters: messages or records that could not be stored, with the reason."""
    return await _listing(connector_id, sql.list_rejected)


async def _listing(connector_id: str, query: Callable[..., list[dict[str, Any]]]) -> Response:
    limit = structure_query(request.args, ListingQuery).limit
    await _spec(connector_id)
    rows = await engine().db.run(query, connector_id, limit)
    return json_response({"data": rows, "count": len(rows)})


@bp.get("/api/connectors/<connector_id>/data")
async def connector_data(connector_id: str) -> Response:
    query: ConnectorDataQuery = structure_query(request.args, ConnectorDataQuery)
    spec = await _spec(connector_id)
    rows = await engine().db.run(
        queries.connector_records,
        table=TABLES[spec.protocol],
        connector_id=connector_id,
        limit=query.limit,
        skip=query.skip,
        sort_by=query.sort_by,
        descending=query.sort_order == -1,
    )
    strings = query.numbers == "string"
    data = [record_json(row, strings=strings) for row in rows]
    return json_response(
        {"data": data, "count": len(data), "limit": query.limit, "skip": query.skip}
    )


async def _spec(connector_id: str) -> ConnectorSpec:
    spec = await engine().db.run(sql.get_connector, connector_id)
    if spec is None:
        raise NotFound(f"connector {connector_id} not found")
    return spec


async def _status(connector_id: str) -> ConnectorStatus:
    manager = engine().manager
    if connector_id in manager.known():
        if await engine().db.run(sql.get_connector, connector_id) is None:
            raise NotFound(f"connector {connector_id} not found")
        return manager.status(connector_id)
    status = await engine().db.run(sql.get_status, connector_id)
    if status is None:
        raise NotFound(f"connector {connector_id} not found")
    return status


def _status_word(connector_id: str, stored: dict[str, str]) -> str:
    manager = engine().manager
    if connector_id in manager.known():
        return manager.status(connector_id).status
    return stored.get(connector_id, "inactive")
