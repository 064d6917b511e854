"""JSON responses and the error handlers that turn exceptions into them.

Every error is JSON: ``{"detail": "..."}`` (404, 409, 503, …) or the 422 list from
:mod:`server.validation`. A bug is logged with its traceback and answered with a generic
500; no stack trace or exception text from a third party ever reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from quart import Quart, Response
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from engine.errors import BadRequest, NotFound, Unavailable

from .validation import RequestValidationError

logger = logging.getLogger(__name__)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


def detail(message: str, status: int) -> Response:
    return json_response({"detail": message}, status)


class Conflict(BadRequest):
    """The request is valid but conflicts with the resource's state (→ 409)."""


def install_error_handlers(app: Quart) -> None:
    @app.errorhandler(RequestValidationError)
    async def _validation(exc: RequestValidationError) -> Response:
        return json_response({"detail": exc.errors}, exc.status)

    @app.errorhandler(NotFound)
    async def _not_found(exc: NotFound) -> Response:
        return detail(str(exc), 404)

    @app.errorhandler(Conflict)
    async def _conflict(exc: Conflict) -> Response:
        return detail(str(exc), 409)

    @app.errorhandler(BadRequest)
    async def _bad_request(exc: BadRequest) -> Response:
        return detail(str(exc), 400)

    @app.errorhandler(Unavailable)
    async def _unavailable(exc: Unavailable) -> Response:
        response = detail(f"service unavailable: {exc}", 503)
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(HTTPException)
    async def _http(exc: HTTPException) -> Response:
        response = detail(exc.description or exc.name, exc.code or 500)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            # RFC 9110: a 405 lists the methods the resource supports.
            response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return response

    @app.errorhandler(Exception)
    async def _bug(exc: Exception) -> Response:
        logger.exception("unhandled error in request")
        return detail("internal server error", 500)
