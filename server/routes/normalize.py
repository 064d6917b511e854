"""``POST /api/normalize/preview``: run one raw message through a normalizer and show the
records it would produce, without storing anything."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
import orjson
from quart import Blueprint, Response

from engine.errors import BadMessage, NotFound
from engine.normalize import Context, Control, decode, normalizer_for
from engine.storage import connectors as sql

from ..context import engine, json_body
from ..responses import json_response
from ..schemas import Preview, preview_json
from ..validation import structure

bp = Blueprint("normalize", __name__)


@bp.post("/api/normalize/preview")
async def preview() -> Response:
    body = structure(await json_body(), Preview)
    exchange, mapping, connector_id = body.exchange or "custom", body.field_mapping, None
    if body.connector_id is not None:
        spec = await engine().db.run(sql.get_connector, body.connector_id)
        if spec is None:
            raise NotFound(f"connector {body.connector_id} not found")
        connector_id = spec.connector_id
        exchange = body.exchange or spec.exchange
        mapping = body.field_mapping or spec.field_mapping
    frame = body.message if isinstance(body.message, str) else orjson.dumps(body.message)
    normalize = normalizer_for(exchange, mapping)
    out: dict[str, Any] = {"exchange": exchange, "records": [], "control": None, "rejected": None}
    try:
        msg, raw = decode(frame)
        result = normalize(msg, raw, Context(connector_id, exchange), datetime.now(UTC))
    except BadMessage as exc:
        # What a connector would do with it: reject it, with this category and reason.
        out["rejected"] = {"category": exc.category, "detail": exc.detail}
        return json_response(out)
    if isinstance(result, Control):
        out["control"] = attrs.asdict(result)
    else:
        out["records"] = [preview_json(r) for r in result]
    return json_response(out)
