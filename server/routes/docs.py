"""``/openapi.json`` and the interactive ``/docs`` page, which works offline: Swagger UI's
files come from the ``swagger-ui-py`` package, never from a CDN."""

from __future__ import annotations

from pathlib import Path

import swagger_ui
from quart import Blueprint, Response, send_from_directory

from ..openapi import SPEC
from ..responses import detail, json_response

bp = Blueprint("docs", __name__)

STATIC = Path(swagger_ui.__file__).parent / "static"
ASSETS = frozenset(
    {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "favicon-32x32.png",
        "favicon-16x16.png",
    }
)

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Sluice API</title>
  <link rel="icon" href="/docs/static/favicon-32x32.png">
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script src="/docs/static/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout",
      persistAuthorization: true
    });
  </script>
</body>
</html>
"""


@bp.get("/openapi.json")
async def openapi() -> Response:
    return json_response(SPEC)


@bp.get("/docs")
async def docs() -> Response:
    return Response(PAGE, content_type="text/html; charset=utf-8")


@bp.get("/docs/static/<name>")
async def docs_static(name: str) -> Response:
    if name not in ASSETS:
        return detail("not found", 404)
    return await send_from_directory(STATIC, name)
