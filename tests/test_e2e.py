"""End to end: a fake exchange → Sluice (whole server on port 0) → PostgreSQL → realtime.

Checks the main promise: every trade id from the feed is stored exactly once and arrives
on ``/api/realtime`` with its database id.
"""

from __future__ import annotations

import httpx
import orjson
import psycopg
import pytest
import trio
import trio_websocket

from server.serve import Service

from .fake_exchange import FakeExchange

pytestmark = pytest.mark.e2e

BINANCE_TRADES = 5000
OKX_TRADES = 2500


async def create_and_start(client: httpx.AsyncClient, body: dict[str, object]) -> str:
    response = await client.post("/api/connectors", json=body)
    assert response.status_code == 201, response.text
    connector_id: str = response.json()["connector_id"]
    started = await client.post(f"/api/connectors/{connector_id}/start")
    assert started.status_code == 200
    assert started.json() == {"connector_id": connector_id, "status": "running"}
    return connector_id


def stored_trade_ids(dsn: str, connector_id: str, id_path: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f"SELECT id, data->>'{id_path}' FROM websocket_messages WHERE connector_id = %s",
            (connector_id,),
        ).fetchall()
    return [(row[0], row[1]) for row in rows]


async def test_feed_is_stored_once_and_broadcast_with_database_ids(
    exchange: FakeExchange, service: Service, database_dsn: str
) -> None:
    realtime: dict[int, dict[str, object]] = {}
    ws_url = service.url.replace("http://", "ws://") + "/api/realtime"
    with trio.fail_after(60):
        async with (
            httpx.AsyncClient(base_url=service.url) as client,
            trio_websocket.open_websocket_url(ws_url) as ws,
        ):
            hello = orjson.loads(await ws.get_message())
            assert hello == {"type": "connected"}
            binance = await create_and_start(
                client,
                {
                    "name": "binance",
                    "api_url": exchange.url(f"/binance?count={BINANCE_TRADES}"),
                    "exchange": "binance",
                },
            )
            okx = await create_and_start(
                client,
                {
                    "name": "okx",
                    "api_url": exchange.url(f"/okx?count={OKX_TRADES}&per_message=7"),
                    "exchange": "okx",
                    "subscribe_messages": [
                        {"op": "subscribe", "args": [{"channel": "trades", "instId": "BTC-USDT"}]}
                    ],
                },
            )
            while len(realtime) < BINANCE_TRADES + OKX_TRADES:
                event = orjson.loads(await ws.get_message())
                assert event["type"] == "data_update"
                assert event["id"] not in realtime, "a record was broadcast twice"
                realtime[event["id"]] = event

            status = (await client.get(f"/api/connectors/{binance}/status")).json()
            assert status["status"] == "running"
            assert status["messages_received"] == BINANCE_TRADES
            assert status["records_stored"] == BINANCE_TRADES
            okx_status = (await client.get(f"/api/connectors/{okx}/status")).json()
            assert okx_status["control_messages"] == 1  # the subscribe ack, not stored
            assert okx_status["records_stored"] == OKX_TRADES

            page = (
                await client.get(f"/api/connectors/{binance}/data?limit=5&numbers=string")
            ).json()
            assert page["count"] == 5
            assert page["limit"] == 5
            assert page["skip"] == 0
            newest = page["data"][0]
            assert newest["data"]["t"] == BINANCE_TRADES  # newest first by source time
            assert newest["price"] == newest["data"]["p"]  # exact digits, no float rounding

    stored_binance = stored_trade_ids(database_dsn, binance, "t")
    assert sorted(int(t) for _, t in stored_binance) == list(range(1, BINANCE_TRADES + 1))
    stored_okx = stored_trade_ids(database_dsn, okx, "tradeId")
    assert sorted(int(t) for _, t in stored_okx) == list(range(1, OKX_TRADES + 1))

    # Every stored record arrived on /api/realtime under its database id.
    for db_id, trade_id in stored_binance:
        event = realtime[db_id]
        assert event["connector_id"] == binance
        assert str(event["data"]["t"]) == trade_id  # type: ignore[index]
    for db_id, trade_id in stored_okx:
        assert realtime[db_id]["data"]["tradeId"] == trade_id  # type: ignore[index]
    assert exchange.received
    assert orjson.loads(exchange.received[0])["op"] == "subscribe"


async def test_flapping_source_loses_nothing_silently(
    exchange: FakeExchange, service: Service, database_dsn: str
) -> None:
    """B1: the source closes every 300 messages and trades go on while we reconnect.
    Every id sent is stored exactly once; every disconnect is a recorded gap."""
    ws_url = service.url.replace("http://", "ws://") + "/api/realtime"
    url = exchange.url("/lossy?per_conn=300&lost=7&total=1500")
    with trio.fail_after(60):
        async with (
            httpx.AsyncClient(base_url=service.url) as client,
            trio_websocket.open_websocket_url(ws_url) as ws,
        ):
            await ws.get_message()
            body = {"name": "flappy", "api_url": url, "exchange": "binance"}
            connector_id = await create_and_start(client, body)
            gap_events = []
            while True:
                event = orjson.loads(await ws.get_message())
                if event["type"] == "gap":
                    gap_events.append(event)
                status = (await client.get(f"/api/connectors/{connector_id}/status")).json()
                if status["records_stored"] == len(exchange.sent) and exchange.next_id > 1500:
                    break
            while len(gap_events) < 4:
                event = orjson.loads(await ws.get_message())
                if event["type"] == "gap":
                    gap_events.append(event)
            gaps = (await client.get(f"/api/connectors/{connector_id}/gaps")).json()
            errors = (await client.get(f"/api/connectors/{connector_id}/errors")).json()
            accounting = status["accounting"]

    stored = sorted(int(t) for _, t in stored_trade_ids(database_dsn, connector_id, "t"))
    assert stored == exchange.sent  # each sent id exactly once, none invented
    assert len(exchange.missed) == 4 * 7
    assert sorted(set(stored) | set(exchange.missed)) == list(range(1, 1501))
    # Four disconnects, four recorded gaps (stored, listed and broadcast).
    assert gaps["count"] == 4
    assert {g["cause"] for g in gaps["data"]} == {"closed"}
    assert all(g["gap_from"] <= g["gap_to"] for g in gaps["data"])
    assert len(gap_events) == 4
    assert {e["connector_id"] for e in gap_events} == {connector_id}
    assert errors["count"] >= 4
    assert status["reconnects"] == 4
    assert accounting["messages_received"] == len(exchange.sent)
    assert accounting["messages_in_flight"] == 0
    assert accounting["records_pending"] == 0


async def test_poison_messages_are_rejected_with_reasons_and_the_rest_committed(
    exchange: FakeExchange, service: Service, database_dsn: str
) -> None:
    """A6/B4: poison frames mixed into a valid stream."""
    total = 600  # 60 poison frames: 10 of each kind
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=service.url) as client:
            body = {
                "name": "p",
                "api_url": exchange.url(f"/poison?count={total}"),
                "exchange": "binance",
            }
            connector_id = await create_and_start(client, body)
            while True:
                status = (await client.get(f"/api/connectors/{connector_id}/status")).json()
                if status["accounting"]["messages_received"] == total + 60 and (
                    status["accounting"]["records_pending"] == 0
                    and status["accounting"]["messages_in_flight"] == 0
                ):
                    break
                await trio.sleep(0.05)
            while (
                rejected := (
                    await client.get(f"/api/connectors/{connector_id}/rejected?limit=1000")
                ).json()
            )["count"] < 50:
                await trio.sleep(0.05)
    assert status["status"] == "running"
    assert status["records_stored"] == total
    assert status["rejected_by_category"] == {
        "bad_value": 20,
        "binary": 10,
        "non_json": 20,
        "nul_character": 10,
    }
    accounting = status["accounting"]
    assert accounting["messages_received"] == (
        accounting["messages_normalized"]
        + accounting["messages_control"]
        + accounting["messages_rejected"]
        + accounting["messages_gap"]
    )
    assert accounting["messages_rejected"] == 60
    reasons = {row["category"] for row in rejected["data"]}
    assert reasons == {"bad_value", "non_json", "nul_character"}
    assert all(row["reason"] and row["raw"] for row in rejected["data"])
    stored = stored_trade_ids(database_dsn, connector_id, "t")
    assert sorted(int(t) for _, t in stored) == list(range(1, total + 1))


async def test_a_refused_subscription_is_an_error_state_said_once_not_a_loop(
    exchange: FakeExchange, service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """OKX answers the subscription with an error and sends nothing else: the connector
    goes to ``error`` with the exchange's reason and waits the long backoff, instead of
    showing ``running`` forever (or reconnecting at full speed and saying it each time)."""
    async with httpx.AsyncClient(base_url=service.url) as client:
        created = await client.post(
            "/api/connectors",
            json={
                "name": "typo",
                "api_url": exchange.url("/okx-refuse"),
                "exchange": "okx",
                "subscribe_messages": [
                    {"op": "subscribe", "args": [{"channel": "trades", "instId": "NOPE-USDT"}]}
                ],
            },
        )
        cid = created.json()["connector_id"]
        started = await client.post(f"/api/connectors/{cid}/start")
        # On loopback the refusal may arrive before the start answers: then it says so.
        assert started.status_code in (200, 409), started.text
        with trio.fail_after(10):
            while (status := (await client.get(f"/api/connectors/{cid}/status")).json())[
                "status"
            ] != "error":
                await trio.sleep(0.05)
        await trio.sleep(1.0)  # at reconnect speed this would be several attempts
        status = (await client.get(f"/api/connectors/{cid}/status")).json()
        errors = (await client.get(f"/api/connectors/{cid}/errors")).json()["data"]
    assert status["status"] == "error"
    assert "NOPE-USDT doesn't exist" in status["last_error"]
    [refused] = [e for e in errors if e["kind"] == "subscription_refused"]
    assert "NOPE-USDT doesn't exist" in refused["message"]
    assert exchange.connections == 1
    said = [r for r in caplog.records if "subscription refused" in r.getMessage()]
    assert len(said) == 1
