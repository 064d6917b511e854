"""The OpenAPI description matches the routes exactly; /docs works offline; and
schemathesis (bounded, fixed seed) finds no 5xx and no response that breaks the schema."""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
import trio
from hypothesis import HealthCheck, settings
from psycopg import sql
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engine.config import Settings
from engine.engine import Engine
from server.app import create_app
from server.openapi import SPEC
from server.serve import Service, serve

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


@pytest.fixture(scope="module")
def live_url(admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A whole server in a thread of its own, for synchronous clients like schemathesis."""
    name = f"sluice_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    settings_ = Settings(
        postgres_dsn=psycopg.conninfo.make_conninfo(admin_dsn, dbname=name),
        port=0,
        data_dir=Path(tmp_path_factory.mktemp("live")),
        pool_min=1,
        pool_max=4,
        encryption_key=TEST_KEY,
        batch_max_age=0.01,
    )
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        holder["token"] = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            holder["service"] = await nursery.start(partial(serve, settings_, handle_signals=False))
            ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(60), "server did not start"
    service: Service = holder["service"]
    try:
        yield service.url
    finally:
        trio.from_thread.run_sync(service.stop, trio_token=holder["token"])
        thread.join(60)
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


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


schema = schemathesis.openapi.from_dict(SPEC).exclude(path_regex=r"^/(api/realtime$|docs)")


@schema.parametrize()
@settings(
    max_examples=8,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.e2e
def test_api_against_its_description(case: schemathesis.Case, live_url: str) -> None:
    case.call_and_validate(
        base_url=live_url,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
        timeout=30,
    )
