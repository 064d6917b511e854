"""The OpenAPI description matches the routes exactly, and /docs works offline. The
contract itself (schemathesis against the live app) is ``test_contract.py``."""

from __future__ import annotations

import re

import httpx

from engine.config import Settings
from engine.engine import Engine
from server.app import create_app
from server.openapi import SPEC

from .conftest import TEST_KEY


def test_every_route_is_described_and_nothing_else() -> None:
    app = create_app(Engine(Settings(postgres_dsn="postgresql:///unused", encryption_key=TEST_KEY)))
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                routes.add((path, method.lower()))
    described = {
        (path, method)
        for path, item in SPEC["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert routes == described


def test_docs_work_offline(live_url: str) -> None:
    page = httpx.get(f"{live_url}/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources
    assert all(s.startswith("/docs/static/") for s in sources)  # no CDN
    for source in sources:
        asset = httpx.get(live_url + source)
        assert asset.status_code == 200
        assert len(asset.content) > 100
    assert httpx.get(f"{live_url}/openapi.json").json()["openapi"] == "3.1.0"
