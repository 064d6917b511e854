"""``/api/websocket/*``: save messages through the pipeline and query what is stored.

``save`` and ``save-batch`` answer ``201`` only after the records committed; saved records
are normalized and broadcast exactly like connector data. ``data`` streams large pages
from a server-side cursor instead of building them in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import attrs
import orjson
import trio
from quart import Blueprint, Response, current_app, request

from engine.errors import BadMessage
from engine.ingest import Overrides, records_from_message
from engine.models import Record
from engine.storage import queries

from ..context import background, engine, json_body
from ..params import int_arg, only_args
from ..responses import json_response
from ..schemas import SaveBatch, SaveMessage, batch_json, record_json
from ..validation import error, structure

bp = Blueprint("websocket_data", __name__)

MAX_DATA_LIMIT = 100_000
MAX_SKIP = 10_000_000
FILTERS = {"exchange", "instrument", "connector_id", "from", "to", "after_id"}
PAGE = {"limit", "skip", "collection_type", "sort_by", "sort_order"}


def _records(body: SaveMessage, loc: list[str | int], batch_id: int | None = None) -> list[Record]:
    try:
        records = records_from_message(
            body.data,
            exchange=body.exchange,
            connector_id=body.connector_id,
            received_at=datetime.now(UTC),
            overrides=Overrides(
                instrument=body.instrument,
                price=body.price,
                size=body.size,
                side=body.side,
                message_type=body.message_type,
                timestamp=body.timestamp,
            ),
            idempotency_key=body.idempotency_key,
            batch_id=batch_id,
        )
    except BadMessage as exc:
        raise error([*loc, "data"], f"{exc.category}: {exc.detail}") from None
    if not records:
        raise error([*loc, "data"], "the message holds no records (an empty array?)")
    return records


def _save_result(ticket_ids: list[int | None], rejected: dict[int, str]) -> dict[str, Any]:
    stored = [i for i in ticket_ids if i is not None]
    return {
        "ids": stored,
        "stored": len(stored),
        "duplicates": len(ticket_ids) - len(stored) - len(rejected),
        "rejected": [{"index": i, "reason": reason} for i, reason in sorted(rejected.items())],
    }


@bp.post("/api/websocket/save")
async def save_message() -> Response:
    body = structure(await json_body(), SaveMessage)
    records = _records(body, ["body"])
    ticket = await engine().save(records)
    if ticket.rejected and len(ticket.rejected) == len(records):
        raise error(["body", "data"], f"the database refused it: {ticket.rejected[0]}")
    return json_response(_save_result(ticket.ids, ticket.rejected), 201)


@bp.post("/api/websocket/save-batch")
async def save_batch() -> Response:
    body = structure(await json_body(), SaveBatch)
    # Validate every message before anything is stored.
    for i, message in enumerate(body.messages):
        _records(_inherit(message, body), ["body", "messages", i])
    batch_id = await engine().db.run(
        queries.insert_batch, body.connector_id, body.exchange, len(body.messages), body.metrics
    )
    records: list[Record] = []
    for i, message in enumerate(body.messages):
        records.extend(_records(_inherit(message, body), ["body", "messages", i], batch_id))
    ticket = await engine().save(records)
    result = _save_result(ticket.ids, ticket.rejected)
    return json_response({"batch_id": batch_id, "message_count": len(body.messages), **result}, 201)


def _inherit(message: SaveMessage, batch: SaveBatch) -> SaveMessage:
    changes: dict[str, Any] = {}
    if message.connector_id is None and batch.connector_id is not None:
        changes["connector_id"] = batch.connector_id
    if message.exchange == "custom" and batch.exchange != "custom":
        changes["exchange"] = batch.exchange
    return attrs.evolve(message, **changes) if changes else message


def _time_arg(name: str) -> datetime | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        if raw.isdigit():
            return datetime.fromtimestamp(int(raw) / (1000 if len(raw) > 11 else 1), UTC)
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise error(["query", name], "must be an ISO 8601 time or epoch seconds/ms") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _filter() -> tuple[queries.DataFilter, bool]:
    collection = request.args.get("collection_type") or "messages"
    if collection not in ("messages", "batches"):
        raise error(["query", "collection_type"], "must be messages or batches")
    sort_order = int_arg("sort_order", -1, -1, 1)
    if sort_order == 0:
        raise error(["query", "sort_order"], "must be -1 (descending) or 1 (ascending)")
    after = request.args.get("after_id")
    after_id = int_arg("after_id", 0, 0, 2**63 - 1) if after else None
    f = queries.DataFilter(
        exchange=request.args.get("exchange") or None,
        instrument=request.args.get("instrument") or None,
        connector_id=request.args.get("connector_id") or None,
        time_from=_time_arg("from"),
        time_to=_time_arg("to"),
        after_id=after_id,
        descending=sort_order == -1,
    )
    if f.time_from and f.time_to and f.time_from > f.time_to:
        raise error(["query", "from"], "must not be after 'to'")
    return f, collection == "batches"


@bp.get("/api/websocket/data")
async def websocket_data() -> Response:
    only_args(FILTERS | PAGE)
    f, batches = _filter()
    allowed = queries.BATCH_SORTABLE if batches else queries.MESSAGE_SORTABLE
    sort_by = request.args.get("sort_by") or ("received_at" if batches else "timestamp")
    if sort_by not in allowed:
        raise error(["query", "sort_by"], f"must be one of {sorted(allowed)}")
    if f.after_id is not None and sort_by != "id":
        raise error(["query", "after_id"], "keyset pagination needs sort_by=id")
    limit = int_arg("limit", 100, 1, MAX_DATA_LIMIT)
    skip = int_arg("skip", 0, 0, MAX_SKIP)
    query, params = queries.data_query(f, batches=batches, sort_by=sort_by, limit=limit, skip=skip)
    send, receive = trio.open_memory_channel[list[dict[str, Any]]](1)
    db = engine().db
    to_json = batch_json if batches else record_json

    async def produce() -> None:
        try:
            await db.stream(query, params, send)
        except Exception:  # the client sees a truncated body; the log says why
            current_app.logger.exception("streaming /api/websocket/data failed")

    async def body() -> AsyncIterator[bytes]:
        with receive:
            yield b'{"data":['
            count, last_id = 0, None
            async for rows in receive:
                chunk = b",".join(orjson.dumps(to_json(row)) for row in rows)
                yield (b"," + chunk) if count else chunk
                count += len(rows)
                last_id = rows[-1]["id"]
            tail: dict[str, Any] = {"count": count, "limit": limit, "skip": skip}
            tail["next_after_id"] = last_id if count == limit and sort_by == "id" else None
            yield b"]," + orjson.dumps(tail)[1:]

    background().start_soon(produce)
    return Response(body(), content_type="application/json")


@bp.get("/api/websocket/data/count")
async def websocket_data_count() -> Response:
    only_args(FILTERS | {"collection_type"})
    f, batches = _filter()
    count = await engine().db.run(queries.count_data, f, batches=batches)
    return json_response({"count": count})
