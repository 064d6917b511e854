"""The REST contract: shapes, validation errors naming the field, 404s, CORS, 503."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import httpx
import psycopg
import pytest
import trio
import trio_websocket

from engine.config import Settings
from server.serve import Service, serve

from .conftest import evolve
from .fake_exchange import FakeExchange

pytestmark = pytest.mark.e2e


@pytest.fixture
async def client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.url) as http:
        yield http


async def test_create_connector_returns_the_contract_shape(client: httpx.AsyncClient) -> None:
    body = {
        "name": "OKX BTC",
        "api_url": "wss://ws.okx.com:8443/ws/v5/public",
        "headers": {"X-Api-Key": "s3cr3t"},
        "subscribe_messages": [{"op": "subscribe", "args": []}],
    }
    response = await client.post("/api/connectors", json=body)
    assert response.status_code == 201
    created = response.json()
    assert created["connector_id"].startswith("conn_")
    assert created["protocol"] == "websocket"
    assert created["exchange"] == "okx"
    assert created["status"] == "inactive"
    assert created["http_method"] == "GET"
    assert created["auth_type"] == "None"
    assert created["polling_interval"] == 1000
    assert created["subscribe_messages"] == body["subscribe_messages"]
    assert created["headers"] == {"X-Api-Key": "****"}  # values are never echoed
    assert created["created_at"] == created["updated_at"]

    listed = (await client.get("/api/connectors")).json()
    assert listed["count"] == 1
    assert listed["data"] == [created]
    assert (await client.get(f"/api/connectors/{created['connector_id']}")).json() == created
    status = (await client.get(f"/api/connectors/{created['connector_id']}/status")).json()
    assert status["status"] == "inactive"
    assert status["messages_received"] == 0


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest", "ws://[fd00:ec2::254]/", "ws://100.100.100.200/"]
)
async def test_urls_the_egress_policy_refuses_are_403_naming_the_field(
    client: httpx.AsyncClient, url: str
) -> None:
    # Well formed, so not a 422: the policy refuses a valid request.
    response = await client.post("/api/connectors", json={"name": "x", "api_url": url})
    assert response.status_code == 403
    [problem] = response.json()["detail"]
    assert (problem["loc"], problem["type"]) == (["body", "api_url"], "egress_denied")


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({"api_url": "ws://127.0.0.1/x"}, ["body", "name"], "missing"),
        ({"name": "x", "api_url": "ftp://host/x"}, ["body", "api_url"], "value_error"),
        ({"name": "x", "api_url": "ws://"}, ["body", "api_url"], "value_error"),
        ({"name": "", "api_url": "ws://h/x"}, ["body", "name"], "value_error"),
        (
            {"name": "x", "api_url": "ws://h/", "polling_interval": "5"},
            ["body", "polling_interval"],
            "type_error",
        ),
        (
            {"name": "x", "api_url": "ws://h/", "polling_interval": 5},
            ["body", "polling_interval"],
            "value_error",
        ),
        (
            {"name": "x", "api_url": "ws://h/", "headers": {"a": 1}},
            ["body", "headers"],
            "type_error",
        ),
        (
            {"name": "x", "api_url": "ws://h/", "subscribe_messages": {}},
            ["body", "subscribe_messages"],
            "type_error",
        ),
        (
            {"name": "x", "api_url": "ws://h/", "auth_type": "magic"},
            ["body", "auth_type"],
            "value_error",
        ),
        (
            {"name": "x", "api_url": "ws://h/", "status": "running"},
            ["body", "status"],
            "extra_forbidden",
        ),
        (
            {"name": "x", "api_url": "ws://h/", "connector_id": "conn_1"},
            ["body", "connector_id"],
            "extra_forbidden",
        ),
        ({"name": "x", "api_url": ""}, ["body", "api_url"], "value_error"),
        ({"name": "x", "api_url": "ws://h:70000/"}, ["body", "api_url"], "value_error"),
        (
            {"name": "x", "api_url": "https://h/x", "auth_type": "BEARER"},
            ["body", "bearer_token"],
            "value_error",
        ),
        (
            {
                "name": "x",
                "api_url": "https://h/x",
                "auth_type": "HMAC",
                "api_key": "k",
                "api_secret": "s",
                "auth_options": {"preset": "kraken"},
            },
            ["body", "auth_options", "preset"],
            "value_error",
        ),
        ([1, 2], ["body"], "type_error"),
    ],
)
async def test_bad_bodies_get_422_naming_the_field(
    client: httpx.AsyncClient, body: object, loc: list[str], kind: str
) -> None:
    response = await client.post("/api/connectors", json=body)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert {"loc": loc, "type": kind} in [{"loc": e["loc"], "type": e["type"]} for e in errors]
    assert all(isinstance(e["msg"], str) and e["msg"] for e in errors)


async def test_invalid_json_and_oversized_bodies(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/connectors", content=b"{nope")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]
    # A raw socket: the server answers 413 before reading the whole body, which an HTTP
    # client library would take as a broken upload.
    host, port = str(client.base_url).removeprefix("http://").rstrip("/").split(":")
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        size = 2 * 1024 * 1024
        await stream.send_all(
            b"POST /api/connectors HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(size).encode() + b"\r\n\r\n" + b"x" * 65536
        )
        response = b""
        with trio.fail_after(10):
            while b'"}' not in response:
                chunk = await stream.receive_some()
                if not chunk:
                    break
                response += chunk
    assert response.split()[1] == b"413"
    assert b'{"detail":' in response


async def test_unknown_things_are_404_json(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/api/connectors/conn_nope"),
        ("GET", "/api/connectors/conn_nope/status"),
        ("GET", "/api/connectors/conn_nope/data"),
        ("POST", "/api/connectors/conn_nope/start"),
        ("POST", "/api/connectors/conn_nope/stop"),
        ("GET", "/no/such/route"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 404, path
        assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("limit=0", ["query", "limit"]),
        ("limit=10001", ["query", "limit"]),
        ("limit=abc", ["query", "limit"]),
        ("skip=-1", ["query", "skip"]),
        ("sort_by=data;drop table x", ["query", "sort_by"]),
        ("sort_order=0", ["query", "sort_order"]),
        ("sort_order=2", ["query", "sort_order"]),
        ("where=1", ["query", "where"]),
    ],
)
async def test_data_query_parameters_are_checked(
    client: httpx.AsyncClient, query: str, loc: list[str]
) -> None:
    created = await client.post("/api/connectors", json={"name": "x", "api_url": "ws://h/x"})
    connector_id = created.json()["connector_id"]
    response = await client.get(f"/api/connectors/{connector_id}/data?{query}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


async def test_postgres_status(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/postgres/status")).json()
    assert body["status"] == "connected"
    assert body["database"].startswith("sluice_test_")
    assert set(body["tables"]) == {
        "api_connectors",
        "connector_status",
        "api_connector_data",
        "websocket_messages",
        "websocket_batches",
    }


async def test_start_and_stop_are_idempotent(
    client: httpx.AsyncClient, exchange: FakeExchange
) -> None:
    url = exchange.url("/binance?count=10")
    connector_id = (
        await client.post("/api/connectors", json={"name": "b", "api_url": url})
    ).json()["connector_id"]
    for _ in range(2):
        response = await client.post(f"/api/connectors/{connector_id}/start")
        assert response.json() == {"connector_id": connector_id, "status": "running"}
    for _ in range(2):
        response = await client.post(f"/api/connectors/{connector_id}/stop")
        assert response.json() == {"connector_id": connector_id, "status": "stopped"}
    status = (await client.get(f"/api/connectors/{connector_id}/status")).json()
    assert status["status"] == "stopped"
    assert (await client.get(f"/api/connectors/{connector_id}")).json()["status"] == "stopped"


async def test_cors_follows_allowed_origins(nursery: trio.Nursery, settings: Settings) -> None:
    settings = evolve(settings, allowed_origins=("http://app.test",))
    service: Service = await nursery.start(partial(serve, settings, handle_signals=False))
    async with httpx.AsyncClient(base_url=service.url) as http:
        allowed = await http.get("/api/connectors", headers={"Origin": "http://app.test"})
        assert allowed.headers["access-control-allow-origin"] == "http://app.test"
        other = await http.get("/api/connectors", headers={"Origin": "http://evil.test"})
        assert "access-control-allow-origin" not in other.headers
        preflight = await http.options(
            "/api/connectors",
            headers={
                "Origin": "http://app.test",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert "POST" in preflight.headers["access-control-allow-methods"]
    service.stop()
    await service.engine.stopped.wait()


async def test_database_outage_gives_503_while_server_and_realtime_stay_up(
    nursery: trio.Nursery, settings: Settings, admin_dsn: str, database_dsn: str
) -> None:
    settings = evolve(settings, pool_timeout=1.0)
    service: Service = await nursery.start(partial(serve, settings, handle_signals=False))
    name = psycopg.conninfo.conninfo_to_dict(database_dsn)["dbname"]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=service.url) as http:
            response = await http.get("/api/connectors")
            assert response.status_code == 503
            assert "detail" in response.json()
            assert "password" not in response.text
        ws_url = service.url.replace("http://", "ws://") + "/api/realtime"
        async with trio_websocket.open_websocket_url(ws_url) as ws:
            assert await ws.get_message() == '{"type":"connected"}'
    service.stop()
    with trio.fail_after(30):
        await service.engine.stopped.wait()


async def test_keepalive_and_mapping_options_round_trip(client: httpx.AsyncClient) -> None:
    body = {
        "name": "okx",
        "api_url": "wss://ws.okx.com:8443/ws/v5/public",
        "stale_timeout": 60,
        "field_mapping": None,
        "retention_days": 7,
    }
    created = (await client.post("/api/connectors", json=body)).json()
    assert created["app_ping"] == "ping"  # OKX needs its text ping; set by default
    assert (created["ping_interval"], created["pong_timeout"]) == (20.0, 10.0)
    assert (created["stale_timeout"], created["retention_days"]) == (60.0, 7)
    custom = {
        "name": "custom",
        "api_url": "ws://127.0.0.1:1/feed",
        "field_mapping": {"price": "p", "instrument": "$.sym"},
    }
    created = (await client.post("/api/connectors", json=custom)).json()
    assert created["app_ping"] is None
    assert created["field_mapping"] == {"price": "p", "instrument": "$.sym"}
    bad = {**custom, "field_mapping": {"colour": "x"}}
    response = await client.post("/api/connectors", json=bad)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "field_mapping"]


async def test_normalize_preview(client: httpx.AsyncClient) -> None:
    okx = {
        "arg": {"channel": "trades", "instId": "BTC-USDT"},
        "data": [
            {
                "instId": "BTC-USDT",
                "tradeId": "1",
                "px": "1.5",
                "sz": "2",
                "side": "buy",
                "ts": "1630048897897",
            }
        ],
    }
    response = await client.post("/api/normalize/preview", json={"message": okx, "exchange": "okx"})
    assert response.status_code == 200
    [record] = response.json()["records"]
    assert (record["instrument"], record["price"], record["dedup_key"]) == (
        "BTC-USDT",
        1.5,
        "t:BTC-USDT:1",
    )
    ack = await client.post("/api/normalize/preview", json={"message": "pong", "exchange": "okx"})
    assert ack.json()["control"] == {"kind": "pong", "detail": ""}
    mapped = await client.post(
        "/api/normalize/preview",
        json={"message": {"q": {"p": "9.99"}}, "field_mapping": {"records": "q", "price": "p"}},
    )
    assert mapped.json()["records"][0]["price"] == 9.99
    # A message a connector would reject is a valid question: the answer says why.
    bad = await client.post("/api/normalize/preview", json={"message": "{not json"})
    assert bad.status_code == 200
    assert bad.json()["rejected"] == {"category": "non_json", "detail": "frame is not valid JSON"}
    null = await client.post("/api/normalize/preview", json={"message": None})
    assert null.status_code == 200
    assert null.json()["rejected"]["category"] == "bad_shape"
    missing = await client.post(
        "/api/normalize/preview", json={"message": {}, "connector_id": "conn_no"}
    )
    assert missing.status_code == 404
    assert (await client.get("/api/postgres/status")).json()["tables"]["websocket_messages"] == 0


async def test_a_start_takes_its_own_lease_in_one_step_not_a_reconciliation(
    nursery: trio.Nursery, settings: Settings, exchange: FakeExchange
) -> None:
    """Starting a connector takes only its lease (one transaction), not a whole cluster
    reconciliation per start: 200 starts took 9 s that way. The periodic reconciliation is
    held off here, so any reconciliation counted was caused by a start."""
    settings = evolve(settings, cluster_interval=60.0, lease_ttl=600.0)
    service: Service = await nursery.start(partial(serve, settings, handle_signals=False))
    coordinator = service.engine.coordinator
    async with httpx.AsyncClient(base_url=service.url) as http:
        ids = []
        for i in range(5):
            body = {"name": f"c{i}", "api_url": exchange.url(f"/ws/{i}"), "exchange": "binance"}
            ids.append((await http.post("/api/connectors", json=body)).json()["connector_id"])
        before = coordinator.reconciliations
        for cid in ids:
            response = await http.post(f"/api/connectors/{cid}/start")
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "running"
        assert coordinator.reconciliations == before
        assert set(coordinator.owned) == set(ids)
        # Idempotent, and a stop still releases the lease so another start takes it again.
        assert (await http.post(f"/api/connectors/{ids[0]}/start")).json()["status"] == "running"
        await http.post(f"/api/connectors/{ids[0]}/stop")
        assert ids[0] not in coordinator.owned
        assert (await http.post(f"/api/connectors/{ids[0]}/start")).json()["status"] == "running"
        assert ids[0] in coordinator.owned
    service.stop()
    with trio.fail_after(30):
        await service.engine.stopped.wait()
