"""The Quart-Trio application.

Two ways to run it, one engine:

* ``sluice serve``: the composition root starts the :class:`~engine.engine.Engine` first,
  then serves ``create_app(engine)`` with ``hypercorn.trio.serve`` in the same nursery.
* ``hypercorn server.asgi:app --worker-class trio``: ``create_app()`` without an engine
  starts one from the environment in its ``before_serving`` hook, under ``app.nursery``,
  and drains it in ``after_serving``.
"""

from __future__ import annotations

import base64
import hmac
import logging
from urllib.parse import urlsplit

from quart import Response, request, websocket
from quart_trio import QuartTrio

from engine.config import Settings
from engine.engine import Engine

from . import write_deadline, wsframes
from .context import ENGINE_KEY
from .logs import set_instance
from .responses import detail, install_error_handlers
from .routes import (
    cluster,
    connectors,
    console,
    docs,
    normalize,
    observe,
    realtime,
    system,
    websocket_data,
)

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024


def create_app(engine: Engine | None = None, settings: Settings | None = None) -> QuartTrio:
    wsframes.install()  # realtime frames: one copy each, not five
    app = QuartTrio("sluice")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    owns_engine = engine is None
    if engine is None:
        engine = Engine(settings or Settings.from_env())
        set_instance(engine.instance_id)
    app.extensions[ENGINE_KEY] = engine
    write_deadline.install(engine.settings.send_timeout)  # cut off clients that stop reading
    # Background tasks get the drain deadline before the nursery is cancelled.
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = engine.settings.drain_timeout + 5
    install_error_handlers(app)
    _install_cors(app, engine.settings.allowed_origins)
    _install_token(app, engine.settings.api_token)
    _install_origin_check(app, engine.settings.allowed_origins)
    for module in (
        connectors,
        system,
        cluster,
        realtime,
        websocket_data,
        normalize,
        observe,
        docs,
        console,
    ):
        app.register_blueprint(module.bp)

    if owns_engine:
        owned = engine

        @app.before_serving
        async def _start_engine() -> None:
            await app.nursery.start(owned.run)

        @app.after_serving
        async def _stop_engine() -> None:
            owned.request_stop()
            await owned.stopped.wait()

    return app


def _install_cors(app: QuartTrio, origins: tuple[str, ...]) -> None:
    if not origins:
        return
    any_origin = "*" in origins

    @app.after_request
    async def _cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and (any_origin or origin in origins):
            response.headers["Access-Control-Allow-Origin"] = "*" if any_origin else origin
            response.headers["Vary"] = "Origin"
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = (
                    "GET, POST, PUT, PATCH, DELETE, OPTIONS"
                )
                asked = request.headers.get("Access-Control-Request-Headers")
                response.headers["Access-Control-Allow-Headers"] = asked or "Content-Type"
                response.headers["Access-Control-Max-Age"] = "600"
        return response


def _install_token(app: QuartTrio, token: str | None) -> None:
    """With ``SLUICE_API_TOKEN`` set, every ``/api/`` route and the realtime socket need it
    (``Authorization: Bearer …``; the socket may pass ``?token=``, or, as the console does
    to keep it out of URLs, offer the subprotocols ``sluice`` and ``bearer.<token in
    base64url>``), compared in constant time."""
    if not token:
        return
    expected = token.encode()

    def valid(given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), expected)

    def bearer(header: str | None) -> str | None:
        if header and header.startswith("Bearer "):
            return header[len("Bearer ") :].strip()
        return None

    def refusal() -> Response:
        response = detail("missing or invalid bearer token", 401)
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.before_request
    async def _check_request() -> Response | None:
        if request.method == "OPTIONS" or not request.path.startswith("/api/"):
            return None
        return None if valid(bearer(request.headers.get("Authorization"))) else refusal()

    def offered(protocols: list[str]) -> str | None:
        for protocol in protocols:
            if protocol.startswith("bearer."):
                encoded = protocol[len("bearer.") :]
                try:
                    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
                except (ValueError, UnicodeDecodeError):
                    return None
        return None

    @app.before_websocket
    async def _check_websocket() -> Response | None:
        given = (
            bearer(websocket.headers.get("Authorization"))
            or websocket.args.get("token")
            or offered(websocket.requested_subprotocols)
        )
        return None if valid(given) else refusal()


def _install_origin_check(app: QuartTrio, origins: tuple[str, ...]) -> None:
    """Browsers send ``Origin`` with WebSocket upgrades: accept only listed origins (or,
    with none listed, the server's own), so another site cannot read the feed."""

    @app.before_websocket
    async def _check_origin() -> Response | None:
        origin = websocket.headers.get("Origin")
        if origin is None or "*" in origins or origin in origins:
            return None
        if not origins and urlsplit(origin).netloc == websocket.headers.get("Host"):
            return None
        return detail("origin not allowed", 403)
