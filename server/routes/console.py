"""The web console: ``/`` serves its page and ``/console/<file>`` its script, styles and the
vendored chart (``server/console/``, no build step, works offline). Every console response
carries a strict Content-Security-Policy: scripts and styles only from this server, no
inline script, no ``eval``, connections only back to this server (its API and realtime
socket), no framing."""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, request, send_from_directory

from ..responses import detail

bp = Blueprint("console", __name__)

FILES = Path(__file__).resolve().parent.parent / "console"
ASSETS = frozenset(
    {"console.js", "console.css", "tail-worker.js", "uPlot.iife.min.js", "uPlot.min.css"}
)


def _csp() -> str:
    host = request.host
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:;"
        f" connect-src 'self' ws://{host} wss://{host}; base-uri 'none'; form-action 'self';"
        " frame-ancestors 'none'"
    )


def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = _csp()
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/")
async def console_page() -> Response:
    response = await send_from_directory(FILES, "index.html")
    response.headers["Cache-Control"] = "no-cache"
    return _secure(response)


@bp.get("/console/<name>")
async def console_asset(name: str) -> Response:
    if name not in ASSETS:
        return detail("not found", 404)
    response = await send_from_directory(FILES, name)
    response.headers["Cache-Control"] = "no-cache"
    return _secure(response)
