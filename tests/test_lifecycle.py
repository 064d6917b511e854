"""Restarts and signals: running connectors resume; SIGTERM drains and exits 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from functools import partial

import httpx
import psycopg
import pytest
import trio

from engine.config import Settings
from server.serve import Service, serve

from .conftest import TEST_KEY
from .fake_exchange import FakeExchange

pytestmark = pytest.mark.e2e


async def wait_for_status(
    client: httpx.AsyncClient, connector_id: str, field: str, value: int
) -> dict[str, object]:
    while True:
        status: dict[str, object] = (
            await client.get(f"/api/connectors/{connector_id}/status")
        ).json()
        if status[field] == value:
            return status
        await trio.sleep(0.05)


def count_rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM websocket_messages").fetchone()
    assert row is not None
    return int(row[0])


async def test_running_connectors_resume_after_restart(
    nursery: trio.Nursery, settings: Settings, exchange: FakeExchange, database_dsn: str
) -> None:
    url = exchange.url("/binance?count=100")
    with trio.fail_after(60):
        first: Service = await nursery.start(partial(serve, settings, handle_signals=False))
        async with httpx.AsyncClient(base_url=first.url) as client:
            body = {"name": "b", "api_url": url, "exchange": "binance"}
            created = await client.post("/api/connectors", json=body)
            running_id = created.json()["connector_id"]
            idle = await client.post("/api/connectors", json={"name": "idle", "api_url": url})
            idle_id = idle.json()["connector_id"]
            await client.post(f"/api/connectors/{running_id}/start")
            await wait_for_status(client, running_id, "records_stored", 100)
        first.stop()
        await first.engine.stopped.wait()
        assert exchange.connections == 1

        second: Service = await nursery.start(partial(serve, settings, handle_signals=False))
        async with httpx.AsyncClient(base_url=second.url) as client:
            # The feed replays trade ids 1..100 on the new connection: all deduplicated.
            status = await wait_for_status(client, running_id, "messages_received", 100)
            assert status["status"] == "running"
            idle_status = (await client.get(f"/api/connectors/{idle_id}/status")).json()
            assert idle_status["status"] == "inactive"
        second.stop()
        await second.engine.stopped.wait()
    assert exchange.connections == 2
    assert count_rows(database_dsn) == 100


async def test_sigterm_drains_and_exits_zero(
    database_dsn: str, exchange: FakeExchange, tmp_path: object
) -> None:
    env = {
        **os.environ,
        "POSTGRES_DSN": database_dsn,
        "SLUICE_DATA_DIR": str(tmp_path),
        "SLUICE_LOG_LEVEL": "INFO",
        "ENCRYPTION_KEY": TEST_KEY,
        "SLUICE_ALLOW_PRIVATE_NETWORKS": "true",
    }
    command = [sys.executable, "-m", "server.cli", "serve", "--port", "0"]
    process = await trio.lowlevel.open_process(command, env=env, stderr=subprocess.PIPE)
    assert process.stderr is not None
    log = b""
    try:
        with trio.fail_after(60):
            while not (match := re.search(rb"listening on (http://\S+)", log)):
                chunk = await process.stderr.receive_some()
                assert chunk, log.decode()
                log += chunk
            base = match.group(1).decode()
            async with httpx.AsyncClient(base_url=base) as client:
                url = exchange.url("/binance?count=300")
                created = await client.post("/api/connectors", json={"name": "b", "api_url": url})
                connector_id = created.json()["connector_id"]
                await client.post(f"/api/connectors/{connector_id}/start")
                await wait_for_status(client, connector_id, "messages_received", 300)
            process.send_signal(signal.SIGTERM)
            async for chunk in process.stderr:
                log += chunk
            assert await process.wait() == 0, log.decode()
    finally:
        if process.returncode is None:
            process.kill()
    text = log.decode()
    assert "SIGTERM received: draining" in text
    assert "engine drained cleanly" in text
    assert count_rows(database_dsn) == 300
    with psycopg.connect(database_dsn) as conn:
        row = conn.execute("SELECT desired_state FROM api_connectors").fetchone()
    assert row == ("running",)  # it will resume on the next start


async def test_a_client_that_stops_reading_is_cut_off_and_never_holds_up_sigterm(
    database_dsn: str, exchange: FakeExchange, tmp_path: object
) -> None:
    """hypercorn writes with a shielded ``send_all``: without a write deadline
    (``server/write_deadline.py``) a realtime subscriber that never reads holds its
    connection for ever, and SIGTERM never ends the process."""
    env = {
        **os.environ,
        "POSTGRES_DSN": database_dsn,
        "SLUICE_DATA_DIR": str(tmp_path),
        "ENCRYPTION_KEY": TEST_KEY,
        "SLUICE_ALLOW_PRIVATE_NETWORKS": "true",
        "SLUICE_SEND_TIMEOUT": "1",
        "SLUICE_REALTIME_MAX_LAG": "1000",
    }
    command = [sys.executable, "-m", "server.cli", "serve", "--port", "0"]
    process = await trio.lowlevel.open_process(command, env=env, stderr=subprocess.PIPE)
    assert process.stderr is not None
    log = bytearray()
    exited = trio.Event()

    async def read_log() -> None:
        assert process.stderr is not None
        async for chunk in process.stderr:  # read all along: a full pipe would stall it
            log.extend(chunk)
        exited.set()

    stuck = trio.socket.socket()
    stuck.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)  # a tiny window
    try:
        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_log)
                while not (match := re.search(rb"listening on http://([\d.]+):(\d+)", log)):
                    assert not exited.is_set(), log.decode()
                    await trio.sleep(0.05)
                host, port = match.group(1).decode(), int(match.group(2))
                await stuck.connect((host, port))
                await stuck.send(
                    b"GET /api/realtime?batch=true HTTP/1.1\r\nHost: x\r\n"
                    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )  # and never reads a byte
                async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
                    url = exchange.url("/binance?count=100000")
                    body = {"name": "b", "api_url": url}
                    connector_id = (await client.post("/api/connectors", json=body)).json()[
                        "connector_id"
                    ]
                    await client.post(f"/api/connectors/{connector_id}/start")
                    cut_off = re.compile(r"^sluice_http_send_timeouts_total\S* 1$", re.M)
                    while not cut_off.search((await client.get("/metrics")).text):
                        await trio.sleep(0.1)
                process.send_signal(signal.SIGTERM)
                await exited.wait()
            assert await process.wait() == 0, log.decode()
    finally:
        stuck.close()
        if process.returncode is None:
            process.kill()
    text = log.decode()
    assert "realtime subscriber lagged behind" in text
    assert "took no data for 1 s (SLUICE_SEND_TIMEOUT): disconnecting it" in text
