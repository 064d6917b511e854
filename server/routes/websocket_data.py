"""``/api/websocket/*``: save messages through the pipeline and query what is stored.

``save`` and ``save-batch`` answer ``201`` only after the records committed; saved records
are normalized and broadcast exactly like connector data. ``data`` streams large pages
from a server-side cursor instead of building them in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio
from quart import Blueprint, Response, current_app, request

from engine.errors import BadMessage
from engine.ingest import Overrides, records_from_message
from engine.models import Record
from engine.normalize import NORMALIZERS
from engine.normalize.common import parse_time
from engine.storage import queries

from ..context import background, engine, json_body
from ..contract import structure_query
from ..csv_export import BATCH_CSV_COLUMNS, RECORD_CSV_COLUMNS, csv_rows, csv_values
from ..responses import json_response
from ..schemas import (
    DataFilterQuery,
    DataQuery,
    SaveBatch,
    SaveMessage,
    batch_json,
    record_json,
)
from ..validation import error, structure

if TYPE_CHECKING:
    from psycopg import sql

bp = Blueprint("websocket_data", __name__)


def _exchange(body: SaveMessage) -> str:
    """The normalizer: an explicit ``exchange`` wins, else ``format`` (the original
    service's field), else ``custom``, which recognizes the message by its shape."""
    if body.exchange is not None and body.exchange.lower() != "custom":
        return body.exchange.lower()
    if body.format is not None and body.format.lower() in NORMALIZERS:
        return body.format.lower()
    return "custom"


def _records(body: SaveMessage, loc: list[str | int], batch_id: int | None = None) -> list[Record]:
    """The records a saved message makes. A message the normalizer finds no market data in
    (an unknown shape, an acknowledgement) is still stored, as one record holding it whole:
    nothing a client saved is dropped. Only what PostgreSQL cannot store is refused."""
    kwargs: dict[str, Any] = {
        "connector_id": body.connector_id,
        "received_at": datetime.now(UTC),
        "overrides": Overrides(
            instrument=body.instrument,
            price=body.price,
            size=body.size,
            side=body.side,
            message_type=body.message_type or body.type,
            timestamp=body.timestamp,
        ),
        "idempotency_key": body.idempotency_key,
        "batch_id": batch_id,
        "message_number": body.messageNumber,
        "format": body.format,
    }
    try:
        try:
            return records_from_message(body.data, exchange=_exchange(body), **kwargs)
        except BadMessage as exc:
            if exc.category == "nul_character" or exc.field is not None:
                raise
            return records_from_message(body.data, exchange="raw", **kwargs)
    except BadMessage as exc:
        where = [*loc, exc.field] if exc.field else [*loc, "data"]
        raise error(where, f"{exc.category}: {exc.detail}") from None


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
    return json_response(_save_result(ticket.ids, ticket.rejected), 201)


@bp.post("/api/websocket/save-batch")
async def save_batch() -> Response:
    body = structure(await json_body(), SaveBatch)
    # Validate every message before anything is stored.
    for i, message in enumerate(body.messages):
        _records(_inherit(message, body), ["body", "messages", i])
    batch_id = await engine().db.run(
        queries.insert_batch,
        body.connector_id,
        body.exchange or "custom",
        len(body.messages),
        body.metrics,
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
    if (message.exchange is None or message.exchange == "custom") and batch.exchange:
        changes["exchange"] = batch.exchange
    return attrs.evolve(message, **changes) if changes else message


def _time_arg(raw: str | None, name: str) -> datetime | None:
    if raw is None:
        return None
    value = parse_time(raw)
    if value is None:
        raise error(["query", name], "must be an RFC 3339 / ISO 8601 time or epoch digits")
    return value


def _filter(q: DataFilterQuery, after_id: int | None = None) -> tuple[queries.DataFilter, bool]:
    f = queries.DataFilter(
        exchange=q.exchange,
        instrument=q.instrument,
        connector_id=q.connector_id,
        time_from=_time_arg(q.from_, "from"),
        time_to=_time_arg(q.to, "to"),
        after_id=after_id,
        descending=getattr(q, "sort_order", -1) == -1,
    )
    return f, q.collection_type == "batches"


def _data_query(q: DataQuery) -> tuple[bool, str, tuple[sql.Composed, list[Any]]]:
    """Whether batches are asked for, the sort column, and the SQL of one page."""
    f, batches = _filter(q, q.after_id)
    sort_by = q.sort_by or ("received_at" if batches else "timestamp")
    if batches and sort_by == "timestamp":
        sort_by = "received_at"  # a batch's time
    allowed = queries.BATCH_SORTABLE if batches else queries.MESSAGE_SORTABLE
    if sort_by not in allowed:
        sort_by = "id"  # a column this collection does not have (documented)
    query = queries.data_query(f, batches=batches, sort_by=sort_by, limit=q.limit, skip=q.skip)
    return batches, sort_by, query


def _stream_rows(
    query: tuple[sql.Composed, list[Any]],
) -> trio.MemoryReceiveChannel[list[dict[str, Any]]]:
    """Rows of ``query`` as they come from PostgreSQL, in chunks, read in the background
    (a response body is consumed after the handler returns)."""
    send, receive = trio.open_memory_channel[list[dict[str, Any]]](1)
    db = engine().db

    async def produce() -> None:
        try:
            await db.stream(*query, send)
        except Exception:  # the client sees a truncated body; the log says why
            current_app.logger.exception("streaming stored data failed")

    background().start_soon(produce)
    return receive


@bp.get("/api/websocket/data")
async def websocket_data() -> Response:
    q: DataQuery = structure_query(request.args, DataQuery)
    batches, sort_by, query = _data_query(q)
    limit, skip = q.limit, q.skip
    strings = q.numbers == "string"

    def to_json(row: dict[str, Any]) -> dict[str, Any]:
        return batch_json(row) if batches else record_json(row, strings=strings)

    receive = _stream_rows(query)

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

    return Response(body(), content_type="application/json")


@bp.get("/api/websocket/data.csv")
async def websocket_data_csv() -> Response:
    """The same query as ``/api/websocket/data``, as CSV streamed row by row: one column
    per record field (numbers with their stored digits), the raw payload as JSON text."""
    q: DataQuery = structure_query(request.args, DataQuery)
    batches, _, query = _data_query(q)
    columns = BATCH_CSV_COLUMNS if batches else RECORD_CSV_COLUMNS
    receive = _stream_rows(query)

    async def body() -> AsyncIterator[bytes]:
        with receive:
            yield csv_rows([columns])
            async for rows in receive:
                yield csv_rows([csv_values(row, columns) for row in rows])

    name = "batches" if batches else "records"
    return Response(
        body(),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="sluice-{name}.csv"'},
    )


@bp.get("/api/websocket/data/count")
async def websocket_data_count() -> Response:
    f, batches = _filter(structure_query(request.args, DataFilterQuery))
    count = await engine().db.run(queries.count_data, f, batches=batches)
    return json_response({"count": count})
