"""``WS /api/realtime``: committed records (and gap notices) pushed as they commit.

Protocol:

* On connect the server sends ``{"type": "connected"}``. Query parameters
  ``connector_id``, ``exchange``, ``instrument``, ``types`` (comma-separated) and
  ``batch=true`` set the initial subscription.
* The client may send ``{"action": "subscribe", "connector_id"?, "exchange"?,
  "instrument"?, "types"?, "batch"?}`` at any time to replace its filter; the server
  answers ``{"type": "subscribed", ...}``. ``{"action": "ping"}`` is answered with
  ``{"type": "pong"}``. Anything else gets ``{"type": "error", "detail": ...}``.
* ``after_id=N`` resumes: every matching record committed after id ``N`` is sent first
  (then ``{"type": "resumed", ...}``), then the live stream, with no gap and no duplicate
  at the seam (see :mod:`server.resume`).
* ``numbers=string`` (query or subscribe) sends prices and sizes as JSON strings; the
  default is JSON numbers written with the source's digits.
* Default framing is one ``data_update`` object per text frame. With ``batch`` on, each
  frame is ``{"type": "data_batch", "records": [...]}``.
* A subscriber that falls behind gets ``{"type": "lagged"}`` and is closed with 1008; on
  server shutdown subscribers are closed with 1001. Past the subscriber cap the upgrade is
  refused with ``503``.

The subscription is a plain context manager, so it is released when the client leaves and
Quart cancels the handler.
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import attrs
import orjson
import trio
from quart import Blueprint, Response, websocket

from engine.hub import Filter, Frames, Notice, Subscription, catch_up

from .. import write_deadline, wsframes
from ..context import engine, json_body
from ..contract import structure_query
from ..responses import detail, json_response
from ..resume import Replay, ResumeFailed
from ..schemas import RealtimeQuery, RealtimeTest
from ..validation import RequestValidationError, structure

bp = Blueprint("realtime", __name__)

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
MAX_CLIENT_MESSAGE = 4096


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        raise ValueError(f"{name} must be a string of 1 to 200 characters")
    return value


def parse_filter(spec: dict[str, Any]) -> tuple[Filter, bool]:
    """A subscription request → (filter, batch mode); ValueError names the bad field."""
    known = {
        "action",
        "connector_id",
        "exchange",
        "instrument",
        "types",
        "batch",
        "token",
        "numbers",
        "after_id",
    }
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"unknown field {sorted(unknown)[0]}")
    types = spec.get("types")
    if isinstance(types, str):
        types = [t for t in types.split(",") if t]
    if types is not None and (
        not isinstance(types, list) or not all(isinstance(t, str) and t for t in types)
    ):
        raise ValueError("types must be a list of strings")
    batch = spec.get("batch", False)
    if isinstance(batch, str):
        if batch.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError("batch must be true or false")
        batch = batch.lower() in ("1", "true", "yes")
    if not isinstance(batch, bool):
        raise ValueError("batch must be a boolean")
    return (
        Filter(
            connector_id=_text(spec.get("connector_id"), "connector_id"),
            exchange=_text(spec.get("exchange"), "exchange"),
            instrument=_text(spec.get("instrument"), "instrument"),
            types=frozenset(types) if types else None,
        ),
        batch,
    )


def _describe(f: Filter, batch: bool) -> dict[str, Any]:
    return {
        "type": "subscribed",
        "connector_id": f.connector_id,
        "exchange": f.exchange,
        "instrument": f.instrument,
        "types": sorted(f.types) if f.types else None,
        "batch": batch,
    }


#: One-record frames per socket write (≈ 250 KB of trades).
BUNDLE_FRAMES = 500


async def _send(text: str) -> None:
    direct = _DIRECT.get()
    if direct is None:
        await websocket.send(text)
        return
    direct.sending += 1  # the hub must not write past a frame on its way down
    try:
        await websocket.send(text)
    finally:
        direct.sending -= 1


@attrs.define(eq=False)
class _Direct:
    """The hub's fan-out writing a batch-mode subscriber's frames straight to its socket.

    Each frame through Quart, hypercorn and wsproto cost ≈ 30 µs of the engine's one
    interpreter, for each subscriber: with 1,000 subscribers one publish made every one of
    their tasks runnable and the loop spent ≈ 30 ms a publish on them, which every other
    await in the pipeline (the writer's included) then waited behind. When a subscriber
    has nothing queued and nothing on its way down the framework's stack, the hub writes
    the frame (the bytes every subscriber with its filter shares, ``wsframes.text_frame``)
    to its socket itself (``write_deadline.write_now``); anything else takes the usual
    road, and what the socket does not take at once goes before the next write, under
    the connection's lock and deadline. Measured in ``bench`` (bench/README.md).

    Only for uncompressed connections (a client that offered no permessage-deflate, or
    asked for the ``sluice`` subprotocol) and subscribers that did not resume (a resume
    filters what it already sent).
    """

    connection: Any
    mode: dict[str, bool]
    sending: int = 0
    _rest: trio.Event = attrs.Factory(trio.Event)

    def __call__(self, frames: Frames) -> bool:
        if self.sending or not self.mode["batch"]:
            return False
        if not write_deadline.write_now(self.connection, wsframes.text_frame(frames.batch_text())):
            return False
        if write_deadline.rest_pending(self.connection):
            self._rest.set()
        return True

    async def flush_rests(self) -> None:
        while True:
            await self._rest.wait()
            self._rest = trio.Event()
            await write_deadline.flush_rest(self.connection)


_DIRECT: ContextVar[_Direct | None] = ContextVar("realtime_direct", default=None)


def _uncompressed(protocol: str | None) -> bool:
    offered = websocket.headers.get("Sec-WebSocket-Extensions", "")
    return protocol == wsframes.SUBPROTOCOL or "permessage-deflate" not in offered.lower()


def _strings(value: Any) -> bool:
    if value is None or value == "":
        return False
    if value not in ("number", "string"):
        raise ValueError("numbers must be number or string")
    return bool(value == "string")


@bp.get("/api/realtime")
async def realtime_over_http() -> Response:
    """A plain GET: this endpoint only speaks WebSocket (RFC 9110: 426 names the upgrade)."""
    response = detail("this endpoint is a WebSocket: send an Upgrade request", 426)
    response.headers["Upgrade"] = "websocket"
    response.headers["Connection"] = "Upgrade"
    return response


@bp.websocket("/api/realtime")
async def realtime() -> Response | None:
    hub = engine().hub
    try:
        query = structure_query(websocket.args, RealtimeQuery)
        initial, batch = parse_filter(dict(websocket.args))
        strings = _strings(query.numbers)
    except (ValueError, RequestValidationError) as exc:
        return detail(str(exc), 422)
    if hub.full:
        return detail(f"at most {hub.max_subscribers} realtime subscribers", 503)
    with hub.subscribe(initial, strings=strings) as sub:  # no await since the check: no race
        published = hub.published_id  # with the subscription, before any await
        # A browser cannot send headers with an upgrade: the console offers the "sluice"
        # subprotocol with its token beside it (server/app.py), and must be answered with
        # it; it also means uncompressed frames (server/wsframes.py).
        offered = websocket.requested_subprotocols
        protocol = wsframes.SUBPROTOCOL if wsframes.SUBPROTOCOL in offered else None
        await websocket.accept(subprotocol=protocol)
        await _send('{"type":"connected"}')
        replay = None
        if query.after_id is not None:
            # Subscribed first, so what commits while the database is read is queued.
            replay = Replay(query.after_id, upto=published)
            try:
                await replay.run(engine().db, initial, strings, batch, _send)
            except ResumeFailed as exc:
                await _send(orjson.dumps(exc.frame).decode())
                await websocket.close(CLOSE_POLICY, "resume_failed")
                return None
        mode = {"batch": batch}
        connection = write_deadline.CONNECTION.get()
        direct = None
        if replay is None and connection is not None and _uncompressed(protocol):
            direct = _Direct(connection, mode)
            _DIRECT.set(direct)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_listen, sub, mode)
            if direct is not None:
                nursery.start_soon(direct.flush_rests)
                sub.direct = direct
            async for frames in sub:
                if replay is not None:
                    frames = replay.unseen(frames)
                    if not frames:
                        continue
                if mode["batch"]:
                    # Behind? Queued batches go out as shared frames where they are big
                    # and joined where they are small (see catch_up). Else the frame text
                    # shared by every subscriber with the same filter.
                    more = sub.waiting()
                    if replay is not None:
                        more = [unseen for m in more if (unseen := replay.unseen(m))]
                    for text in catch_up([frames, *more]) if more else [frames.batch_text()]:
                        await _send(text)
                else:
                    # One write for every one-record frame waiting (server/wsframes.py).
                    waiting: list[str] = []
                    for queued in [frames, *sub.waiting()]:
                        waiting += queued if replay is None else replay.unseen(queued)
                    for start in range(0, len(waiting), BUNDLE_FRAMES):
                        await _send(wsframes.FrameBundle(waiting[start : start + BUNDLE_FRAMES]))
            sub.direct = None
            nursery.cancel_scope.cancel()
        reason = sub.closed_reason
    if reason == "lagged":
        notice = {"type": "lagged", "detail": "subscriber fell behind; reconnect to resume"}
        await _send(orjson.dumps(notice).decode())
        await websocket.close(CLOSE_POLICY, "lagged")
    elif reason == "shutdown":
        await websocket.close(CLOSE_GOING_AWAY, "server shutting down")
    return None


async def _listen(sub: Subscription, mode: dict[str, bool]) -> None:
    """Handle client messages: filter changes and pings."""
    while True:
        raw = await websocket.receive()
        try:
            if len(raw) > MAX_CLIENT_MESSAGE:
                raise ValueError("message too long")
            message = orjson.loads(raw)
            if not isinstance(message, dict):
                raise ValueError("expected a JSON object")
            action = message.get("action")
            if action == "ping":
                await _send('{"type":"pong"}')
            elif action == "subscribe":
                sub.filter, mode["batch"] = parse_filter(message)
                if "numbers" in message:
                    sub.strings = _strings(message["numbers"])
                await _send(orjson.dumps(_describe(sub.filter, mode["batch"])).decode())
            else:
                raise ValueError("action must be subscribe or ping")
        except (ValueError, orjson.JSONDecodeError) as exc:
            await _send(orjson.dumps({"type": "error", "detail": str(exc)}).decode())


@bp.post("/api/realtime/test")
async def realtime_test() -> Response:
    """Broadcast a test message; answer how many subscribers it reached."""
    body = structure(await json_body(empty={}), RealtimeTest)
    payload = {
        "type": "test",
        "message": body.message,
        "timestamp": datetime.now(UTC),
    }
    hub = engine().hub
    delivered = hub.publish_notice(Notice(None, payload))
    await engine().announce_notice("test", payload)  # and every other instance's
    return json_response({"delivered": delivered, "subscribers": hub.statistics().subscribers})
