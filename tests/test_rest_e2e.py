"""REST sources through the real server: a Binance-style signed connector polls a local
endpoint; its records and status are visible; secrets appear nowhere but in ciphertext
(S2); keys rotate."""

from __future__ import annotations

import logging
from functools import partial

import httpx
import orjson
import psycopg
import pytest
import trio

from engine.config import Settings
from engine.crypto import Keyring, parse_key
from engine.storage import Database
from server.rotate import rotate_keys
from server.serve import Service, serve

from .conftest import TEST_KEY, evolve
from .fake_exchange import FakeExchange
from .fake_rest import FakeRest

pytestmark = pytest.mark.e2e

CANARIES = {
    "api_key": "CANARY-apikey-7f3a",
    "api_secret": "CANARY-secret-91bd",
    "header": "CANARY-header-22c1",
    "query": "CANARY-query-5e0f",
}


def dump_database(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        ]
        return "\n".join(
            str(row[0])
            for table in tables
            for row in conn.execute(f'SELECT row_to_json(t)::text FROM "{table}" t').fetchall()
        )


async def test_signed_rest_connector_end_to_end_without_leaking_secrets(
    nursery: trio.Nursery,
    service: Service,
    database_dsn: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="engine")
    caplog.set_level(logging.DEBUG, logger="server")
    rest: FakeRest = await nursery.start(FakeRest(per_request=3, fail_first=1).run)
    bodies: list[str] = []
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=service.url) as client:
            body = {
                "name": "signed",
                "api_url": rest.url("/api/v3/myTrades?symbol=BTCUSDT"),
                "polling_interval": 200,
                "auth_type": "HMAC",
                "auth_options": {"preset": "binance"},
                "api_key": CANARIES["api_key"],
                "api_secret": CANARIES["api_secret"],
                "headers": {"X-Trace": CANARIES["header"]},
                "secret_headers": ["X-Trace"],  # not a credential-like name: marked secret
                "query_params": {"token": CANARIES["query"]},
                "field_mapping": {"price": "price", "size": "qty", "timestamp": "time", "id": "id"},
            }
            created = await client.post("/api/connectors", json=body)
            assert created.status_code == 201
            connector = created.json()
            assert connector["protocol"] == "rest"
            assert (connector["api_key"], connector["api_secret"]) == ("****", "****")
            assert connector["passphrase"] is None
            assert connector["headers"] == {"X-Trace": "****"}
            cid = connector["connector_id"]
            await client.post(f"/api/connectors/{cid}/start")
            while True:
                status = (await client.get(f"/api/connectors/{cid}/status")).json()
                if status["records_stored"] >= 9:
                    break
                await trio.sleep(0.05)
            data = (await client.get(f"/api/connectors/{cid}/data?sort_by=id&sort_order=1")).json()
            # Exercise the other read paths and an error path, keeping every body.
            for path in (
                "/api/connectors",
                f"/api/connectors/{cid}",
                f"/api/connectors/{cid}/errors",
                f"/api/connectors/{cid}/gaps",
                f"/api/connectors/{cid}/rejected",
                "/api/postgres/status",
                f"/api/connectors/{cid}/data",
            ):
                bodies.append((await client.get(path)).text)
            bad = await client.put(f"/api/connectors/{cid}", json={"auth_options": {"preset": "x"}})
            bodies.append(bad.text)
            updated = await client.put(
                f"/api/connectors/{cid}", json={"name": "renamed", "headers": {"X-Trace": "****"}}
            )
            bodies.append(updated.text)
            assert updated.json()["name"] == "renamed"
            await client.post(f"/api/connectors/{cid}/stop")
            bodies.append(status_text := (await client.get(f"/api/connectors/{cid}/status")).text)

    assert status["requests"] >= 4
    assert status["last_status_code"] == 200
    first = data["data"][0]
    assert (first["price"], first["size"]) == (100.25, 0.5)
    # REST records carry the response they came from, and the source's id
    assert first["status_code"] == 200
    assert isinstance(first["response_time_ms"], float)
    assert first["source_id"] == "1"
    assert first["session_id"].startswith("sess_")
    assert first["data"]["id"] == 1
    # The source really got signed requests with the secrets.
    request = rest.requests[-1].decode()
    assert f"x-mbx-apikey: {CANARIES['api_key']}".lower() in request.lower()
    assert "signature=" in request
    assert f"token={CANARIES['query']}" in request
    # S2: nowhere else.
    haystacks = [*bodies, status_text, caplog.text, dump_database(database_dsn)]
    for canary in CANARIES.values():
        for text in haystacks:
            assert canary not in text


async def test_undecryptable_credentials_put_only_that_connector_in_error(
    nursery: trio.Nursery, settings: Settings
) -> None:
    rest: FakeRest = await nursery.start(FakeRest().run)
    first: Service = await nursery.start(partial(serve, settings, handle_signals=False))
    async with httpx.AsyncClient(base_url=first.url) as client:
        body = {"name": "b", "api_url": rest.url(), "auth_type": "BEARER", "bearer_token": "t"}
        cid = (await client.post("/api/connectors", json=body)).json()["connector_id"]
        plain = (
            await client.post("/api/connectors", json={"name": "p", "api_url": rest.url()})
        ).json()
    first.stop()
    await first.engine.stopped.wait()
    other_key = evolve(settings, encryption_key="z" * 32)  # the old key is gone
    second: Service = await nursery.start(partial(serve, other_key, handle_signals=False))
    async with httpx.AsyncClient(base_url=second.url) as client:
        started = await client.post(f"/api/connectors/{cid}/start")
        assert started.status_code == 409
        assert "decrypt" in started.json()["detail"]
        assert (await client.get(f"/api/connectors/{cid}/status")).json()["status"] == "error"
        ok = await client.post(f"/api/connectors/{plain['connector_id']}/start")
        assert ok.json()["status"] == "running"
    second.stop()
    await second.engine.stopped.wait()


async def test_rotate_keys_reencrypts_everything_and_is_rerunnable(
    settings: Settings, database_dsn: str
) -> None:
    from engine.models import ConnectorSpec
    from engine.storage.connectors import get_connector, insert_connector

    old = Keyring(parse_key(TEST_KEY))
    spec = ConnectorSpec(
        connector_id="conn_rot",
        name="r",
        api_url="https://h/x",
        protocol="rest",
        exchange="custom",
        auth_type="BEARER",
        credentials={"bearer_token": old.encrypt("tok-5ecret", "conn_rot", "bearer_token")},
        headers={"X-A": old.encrypt("h", "conn_rot", "header:X-A")},
    )
    new_key = "n" * 32
    rotated_settings = evolve(settings, encryption_key=new_key, encryption_keys=TEST_KEY)
    async with Database.open(settings) as db:
        await db.run(insert_connector, spec)
        assert await rotate_keys(db, rotated_settings) == 2
        assert await rotate_keys(db, rotated_settings) == 0  # nothing left: safe to rerun
        stored = await db.run(get_connector, "conn_rot")
    assert stored is not None
    new = Keyring(parse_key(new_key))
    assert (
        new.decrypt(stored.credentials["bearer_token"], "conn_rot", "bearer_token") == "tok-5ecret"
    )
    assert new.decrypt(stored.headers["X-A"], "conn_rot", "header:X-A") == "h"
    assert b"tok-5ecret" not in orjson.dumps(stored.credentials)


async def test_update_replaces_a_running_connector_and_delete_purges(
    nursery: trio.Nursery, service: Service, database_dsn: str
) -> None:
    rest: FakeRest = await nursery.start(FakeRest(per_request=2).run)
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=service.url) as client:
            body = {"name": "r", "api_url": rest.url("/a"), "polling_interval": 100}
            cid = (await client.post("/api/connectors", json=body)).json()["connector_id"]
            await client.post(f"/api/connectors/{cid}/start")
            while (await client.get(f"/api/connectors/{cid}/status")).json()["records_stored"] < 4:
                await trio.sleep(0.05)
            updated = await client.put(f"/api/connectors/{cid}", json={"api_url": rest.url("/b")})
            assert updated.status_code == 200
            assert updated.json()["api_url"].endswith("/b")
            before = len(rest.requests)
            while len(rest.requests) < before + 3:
                await trio.sleep(0.05)
            assert rest.requests[-1].startswith(b"GET /b ")
            assert service.engine.manager.is_running(cid)
            for bad, loc in (
                ({"connector_id": "conn_x"}, ["body", "connector_id"]),
                ({"status": "running"}, ["body", "status"]),
                ({"polling_interval": 1}, ["body", "polling_interval"]),
            ):
                response = await client.put(f"/api/connectors/{cid}", json=bad)
                assert response.status_code == 422
                assert response.json()["detail"][0]["loc"] == loc
            deleted = await client.delete(f"/api/connectors/{cid}?purge_data=true")
            assert deleted.status_code == 204
            assert not service.engine.manager.is_running(cid)
            assert (await client.get(f"/api/connectors/{cid}")).status_code == 404
            assert (await client.delete(f"/api/connectors/{cid}")).status_code == 404
    with psycopg.connect(database_dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM api_connector_data WHERE connector_id = %s", (cid,)
        ).fetchone()
    assert row == (0,)


async def test_websocket_sources_go_through_the_egress_guard(
    nursery: trio.Nursery, settings: Settings
) -> None:
    strict = evolve(settings, allow_private_networks=False)
    service: Service = await nursery.start(partial(serve, strict, handle_signals=False))
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=service.url) as client:
            literal = await client.post(
                "/api/connectors", json={"name": "x", "api_url": "ws://127.0.0.1:9/feed"}
            )
            assert literal.status_code == 403  # an IP literal that can never be allowed
            assert literal.json()["detail"][0]["loc"] == ["body", "api_url"]
            body = {"name": "x", "api_url": "ws://localhost:9/feed"}  # a name: checked on connect
            cid = (await client.post("/api/connectors", json=body)).json()["connector_id"]
            await client.post(f"/api/connectors/{cid}/start")
            while not (await client.get(f"/api/connectors/{cid}/errors")).json()["count"]:
                await trio.sleep(0.05)
            # A permanent failure: error state with the reason, not a reconnect loop.
            while (status := (await client.get(f"/api/connectors/{cid}/status")).json())[
                "status"
            ] != "error":
                await trio.sleep(0.05)
            await trio.sleep(1.0)  # at reconnect speed this would be several attempts
            errors = (await client.get(f"/api/connectors/{cid}/errors")).json()["data"]
    assert status["last_error"] == "destination not allowed by the egress policy"
    assert len(errors) == 1
    assert errors[0]["kind"] == "egress_denied"
    assert errors[0]["message"] == "destination not allowed by the egress policy"
    service.stop()
    await service.engine.stopped.wait()


async def test_websocket_connectors_send_their_headers_and_query_params(
    service: Service, exchange: FakeExchange
) -> None:
    """Secrets for WebSocket feeds (an API key header, a token parameter) reach the source
    in the handshake, and nowhere else."""
    body = {
        "name": "ws-auth",
        "api_url": exchange.url("/binance?count=3"),
        "exchange": "binance",
        "headers": {"X-Api-Key": CANARIES["header"]},
        "query_params": {"token": CANARIES["query"]},
    }
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=service.url) as client:
            created = (await client.post("/api/connectors", json=body)).json()
            assert created["headers"] == {"X-Api-Key": "****"}
            cid = created["connector_id"]
            await client.post(f"/api/connectors/{cid}/start")
            while (await client.get(f"/api/connectors/{cid}/status")).json()["records_stored"] < 3:
                await trio.sleep(0.05)
    path, headers = exchange.requests[-1]
    assert path == f"/binance?count=3&token={CANARIES['query']}"
    assert headers["x-api-key"] == CANARIES["header"]
