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
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio

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
