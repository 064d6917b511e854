"""The Quart-Trio application.

Two ways to run it, one engine:

* ``sluice serve``: the composition root starts the :class:`~engine.engine.Engine` first,
  then serves ``create_app(engine)`` with ``hypercorn.trio.serve`` in the same nursery.
* ``hypercorn server.asgi:app --worker-class trio``: ``create_app()`` without an engine
  starts one from the environment in its ``before_serving`` hook, under ``app.nursery``,
  and drains it in ``after_serving``.
"""

from __future__ import annotations

import logging

from quart import Response, request
from quart_trio import QuartTrio

from engine.config import Settings
from engine.engine import Engine

from .context import ENGINE_KEY
from .responses import install_error_handlers
from .routes import connectors, normalize, realtime, system, websocket_data

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024


def create_app(engine: Engine | None = None, settings: Settings | None = None) -> QuartTrio:
    app = QuartTrio("sluice")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    owns_engine = engine is None
    if engine is None:
        engine = Engine(settings or Settings.from_env())
    app.extensions[ENGINE_KEY] = engine
    # Background tasks get the drain deadline before the nursery is cancelled.
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = engine.settings.drain_timeout + 5
    install_error_handlers(app)
    _install_cors(app, engine.settings.allowed_origins)
    for module in (connectors, system, realtime, websocket_data, normalize):
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
