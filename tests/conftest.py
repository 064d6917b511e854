"""Shared fixtures.

Test policy (after trio-websocket's): pure logic is tested as plain functions; time logic
under ``autojump_clock`` with exact ``trio.current_time()`` values; anything that touches
PostgreSQL runs against a real server in real time — an external one when ``POSTGRES_DSN``
or ``POSTGRES_HOST`` is set, otherwise the embedded one, started once per session. Each
test that needs a database gets a fresh one, dropped afterwards. Network tests use only
loopback. Tests that wait on the network or the database wrap their body in
``trio.fail_after`` so a hang fails instead of stalling the suite.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
import trio
from psycopg import sql

from bench.runner import fresh_database, postgres
from engine.config import Settings
from server.serve import Service, serve

from .fake_exchange import FakeExchange

TEST_KEY = "test-key-0123456789abcdef-012345"


@pytest.fixture(scope="session")
def admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A maintenance DSN for the server the tests use."""
    with postgres(tmp_path_factory.mktemp("pg")) as dsn:
        yield dsn


@pytest.fixture
def database_dsn(admin_dsn: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    with fresh_database(admin_dsn, "sluice_test") as dsn:
        yield dsn


@pytest.fixture
def settings(database_dsn: str, tmp_path: Path) -> Settings:
    return Settings(
        postgres_dsn=database_dsn,
        port=0,
        data_dir=tmp_path / "data",
        pool_min=1,
        pool_max=4,
        batch_max_age=0.01,
        drain_timeout=10.0,
        encryption_key=TEST_KEY,
        allow_private_networks=True,  # the fake exchanges live on loopback
    )


def evolve(settings: Settings, **changes: object) -> Settings:
    return attrs.evolve(settings, **changes)  # type: ignore[misc]


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx honours proxy variables; tests talk to loopback only.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost,::1")


@pytest.fixture
async def exchange(nursery: trio.Nursery) -> FakeExchange:
    """The local fake exchange (see ``fake_exchange``), on a free loopback port."""
    fake: FakeExchange = await nursery.start(FakeExchange().run)
    return fake


@pytest.fixture
async def service(nursery: trio.Nursery, settings: Settings) -> AsyncIterator[Service]:
    """The whole server (engine + hypercorn) on port 0, drained at the end of the test."""
    running: Service = await nursery.start(partial(serve, settings, handle_signals=False))
    yield running
    running.stop()
    with trio.fail_after(30):
        await running.engine.stopped.wait()


@pytest.fixture(scope="module")
def live_url(admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A whole server in a thread of its own, for synchronous clients like schemathesis."""
    name = f"sluice_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    live_settings = Settings(
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
            holder["service"] = await nursery.start(
                partial(serve, live_settings, handle_signals=False)
            )
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
