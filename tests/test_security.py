"""Management API token, WebSocket origin checks, exposure refusal, log redaction, limits."""

from __future__ import annotations

import logging
from functools import partial

import httpx
import pytest
import trio
import trio_websocket

from engine.config import Settings
from engine.errors import ConfigurationError
from engine.redact import RedactingFilter, redact_text, redact_url
from server.cli import check_exposure
from server.serve import Service, serve

from .conftest import evolve

pytestmark = pytest.mark.e2e

TOKEN = "t0k3n-for-tests"


async def test_api_token_guards_api_and_realtime(nursery: trio.Nursery, settings: Settings) -> None:
    service: Service = await nursery.start(
        partial(serve, evolve(settings, api_token=TOKEN), handle_signals=False)
    )
    ws = service.url.replace("http://", "ws://") + "/api/realtime"
    async with httpx.AsyncClient(base_url=service.url) as client:
        refused = await client.get("/api/connectors")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        wrong = await client.get("/api/connectors", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await client.get("/api/connectors", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
    with trio.fail_after(10):
        async with trio_websocket.open_websocket_url(f"{ws}?token={TOKEN}") as conn:
            assert await conn.get_message() == '{"type":"connected"}'
        header = [("Authorization", f"Bearer {TOKEN}")]
        async with trio_websocket.open_websocket_url(ws, extra_headers=header) as conn:
            assert await conn.get_message() == '{"type":"connected"}'
    service.stop()
    await service.engine.stopped.wait()


async def test_realtime_refuses_foreign_origins(nursery: trio.Nursery, settings: Settings) -> None:
    service: Service = await nursery.start(
        partial(serve, evolve(settings, allowed_origins=("http://app.test",)), handle_signals=False)
    )
    host, port = service.url.removeprefix("http://").split(":")

    async def upgrade_status(origin: str) -> int:
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(
                b"GET /api/realtime HTTP/1.1\r\nHost: "
                + f"{host}:{port}".encode()
                + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nOrigin: "
                + origin.encode()
                + b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            head = await stream.receive_some()
        return int(head.split()[1])

    with trio.fail_after(10):
        assert await upgrade_status("http://evil.test") == 403
        assert await upgrade_status("http://app.test") == 101
    service.stop()
    await service.engine.stopped.wait()


def test_serving_beyond_loopback_needs_a_token_or_insecure(settings: Settings) -> None:
    exposed = evolve(settings, host="0.0.0.0")
    with pytest.raises(ConfigurationError, match="SLUICE_API_TOKEN"):
        check_exposure(exposed, insecure=False)
    check_exposure(exposed, insecure=True)
    check_exposure(evolve(exposed, api_token=TOKEN), insecure=False)
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_exposure(evolve(settings, host=host), insecure=False)


def test_redaction_choke_point() -> None:
    assert redact_url("https://user:pw@api.x.com:8443/v1/t?apiKey=S&sig=1") == (
        "https://api.x.com:8443/v1/t"
    )
    text = "GET https://h/p?signature=abc&key=S 'Authorization': 'Bearer S' X-MBX-APIKEY: S"
    assert "S'" not in redact_text(text)
    assert "key=S" not in redact_text(text)
    record = logging.LogRecord(
        "httpx", logging.INFO, "", 0, "HTTP Request: %s", ("GET https://h/?k=S",), None
    )
    RedactingFilter().filter(record)
    assert record.getMessage() == "HTTP Request: GET https://h/?<redacted>"


async def test_deeply_nested_json_is_a_clean_4xx(service: Service) -> None:
    deep = (
        b'{"name": "x", "api_url": "ws://h/", "subscribe_messages": ['
        + b"[" * 2000
        + b"]" * 2000
        + b"]}"
    )
    async with httpx.AsyncClient(base_url=service.url) as client:
        response = await client.post("/api/connectors", content=deep)
        assert response.status_code == 422
        huge_header = await client.get("/api/connectors", headers={"X-Big": "a" * 70_000})
        assert 400 <= huge_header.status_code < 500


def test_cli_reports_configuration_problems_without_a_traceback(
    database_dsn: str, tmp_path: object
) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "POSTGRES_DSN": database_dsn, "SLUICE_DATA_DIR": str(tmp_path)}
    env.pop("ENCRYPTION_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "ENCRYPTION_KEY is required" in result.stderr
    assert "Traceback" not in result.stderr
