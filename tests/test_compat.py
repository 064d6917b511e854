"""Clients of the original "ETL Tool" service work unchanged.

Every request, body, query and frame that service documents (the examples of the README's
"Coming from the original service") is replayed against a running server through a plain
HTTP client and a plain WebSocket client, and the answers are checked field by field.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio_websocket

from server.serve import Service

from .fake_exchange import FakeExchange, binance_trade

pytestmark = pytest.mark.e2e

ORIGINAL_SAVE = {
    "timestamp": "2024-01-01T00:00:00Z",
    "exchange": "okx",
    "type": "trade",
    "data": {
        "arg": {"channel": "trades", "instId": "BTC-USDT"},
        "data": [
            {
                "instId": "BTC-USDT",
                "tradeId": "130639474",
                "px": "50000.50",
                "sz": "0.0100",
                "side": "buy",
                "ts": "1704067200000",
            }
        ],
    },
    "messageNumber": 1,
    "format": "OKX",
}
DATA_UPDATE_FIELDS = {
    "type",
    "id",
    "source_id",
    "session_id",
    "connector_id",
    "timestamp",
    "exchange",
    "instrument",
    "price",
    "data",
}


@pytest.fixture
async def client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        yield http


def ws_url(service: Service, query: str = "") -> str:
    return service.url.replace("http://", "ws://") + "/api/realtime" + query


async def next_update(ws: trio_websocket.WebSocketConnection) -> tuple[str, dict[str, Any]]:
    while True:
        text = await ws.get_message()
        event = orjson.loads(text)
        if event["type"] == "data_update":
            assert isinstance(text, str)
            return text, event


async def test_documented_save_body_is_stored_and_broadcast_in_the_original_shape(
    service: Service, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(20):
        async with trio_websocket.open_websocket_url(ws_url(service)) as ws:
            assert orjson.loads(await ws.get_message()) == {"type": "connected"}
            saved = await client.post("/api/websocket/save", json=ORIGINAL_SAVE)
            assert saved.status_code == 201, saved.text
            [record_id] = saved.json()["ids"]
            text, frame = await next_update(ws)
    assert set(frame) >= DATA_UPDATE_FIELDS
    assert frame["id"] == record_id
    assert (frame["exchange"], frame["instrument"], frame["message_type"]) == (
        "okx",
        "BTC-USDT",
        "trade",
    )
    # A JSON number, with the source's own digits in the text: price.toFixed(2) works and
    # a decimal parser gets 50000.50 exactly.
    assert isinstance(frame["price"], float)
    assert '"price":50000.50,' in text
    assert '"size":0.0100,' in text
    assert frame["source_id"] == "130639474"
    assert frame["session_id"] is None  # saved, not read by a connector run
    assert frame["data"] == ORIGINAL_SAVE["data"]["data"][0]  # the record's own item

    page = await client.get("/api/websocket/data?exchange=okx")
    assert '"price":50000.50,' in page.text
    [stored] = page.json()["data"]
    assert (stored["messageNumber"], stored["format"]) == (1, "OKX")
    assert stored["timestamp"] == "2024-01-01T00:00:00+00:00"  # the body's timestamp
    as_strings = (await client.get("/api/websocket/data?exchange=okx&numbers=string")).json()
    assert (as_strings["data"][0]["price"], as_strings["data"][0]["size"]) == (
        "50000.50",
        "0.0100",
    )


async def test_format_picks_the_normalizer_and_save_batch_takes_the_same_bodies(
    client: httpx.AsyncClient,
) -> None:
    binance = orjson.loads(binance_trade(7))
    body = {"data": binance, "type": "trade", "messageNumber": 2, "format": "binance"}
    response = await client.post(
        "/api/websocket/save-batch", json={"messages": [body, ORIGINAL_SAVE]}
    )
    assert response.status_code == 201, response.text
    assert response.json()["stored"] == 2
    rows = (await client.get("/api/websocket/data?sort_by=id&sort_order=1")).json()["data"]
    assert [(r["exchange"], r["side"], r["messageNumber"]) for r in rows] == [
        ("binance", "sell" if binance["m"] else "buy", 2),
        ("okx", "buy", 1),
    ]
    unknown = await client.post("/api/websocket/save", json={**body, "format": "NYSE"})
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "format"]
    extra = await client.post("/api/websocket/save", json={**body, "colour": "red"})
    assert extra.status_code == 422
    assert extra.json()["detail"][0]["loc"] == ["body", "colour"]


async def test_original_shapes_are_recognized_without_an_exchange(
    client: httpx.AsyncClient,
) -> None:
    shapes = [
        ORIGINAL_SAVE["data"],  # OKX {arg, data: [...]}
        {"stream": "btcusdt@trade", "data": orjson.loads(binance_trade(8))},  # Binance
        orjson.loads(binance_trade(9)),  # a bare Binance trade event
    ]
    for data in shapes:
        response = await client.post("/api/websocket/save", json={"data": data})
        assert response.status_code == 201, response.text
    rows = (await client.get("/api/websocket/data?sort_by=id&sort_order=1")).json()["data"]
    assert [(r["exchange"], r["message_type"]) for r in rows] == [
        ("okx", "trade"),
        ("binance", "trade"),
        ("binance", "trade"),
    ]


async def test_connector_reads_back_what_it_polls_and_its_records_have_sessions(
    client: httpx.AsyncClient, exchange: FakeExchange
) -> None:
    created = await client.post(
        "/api/connectors",
        json={
            "name": "binance trades",
            "api_url": exchange.url("/binance?count=5&start=1"),
            "exchange": "binance",
            "query_params": {"symbol": "BTCUSDT", "apiKey": "k-123", "desk": "emea"},
            "headers": {"X-Desk": "emea", "Authorization": "Bearer t-123"},
            "secret_query_params": ["desk"],
        },
    )
    assert created.status_code == 201, created.text
    connector = created.json()
    # What it polls is readable; credentials (by name, or marked) are not.
    assert connector["query_params"] == {"symbol": "BTCUSDT", "apiKey": "****", "desk": "****"}
    assert connector["headers"] == {"X-Desk": "emea", "Authorization": "****"}
    cid = connector["connector_id"]

    async def records(n: int) -> list[dict[str, Any]]:
        while True:
            page = (await client.get(f"/api/connectors/{cid}/data?sort_by=id&sort_order=1")).json()
            if len(page["data"]) >= n:
                return list(page["data"])
            await trio.sleep(0.05)

    with trio.fail_after(20):
        await client.post(f"/api/connectors/{cid}/start")
        await records(5)
        await client.post(f"/api/connectors/{cid}/stop")
        moved = {"api_url": exchange.url("/binance?count=5&start=6")}
        assert (await client.put(f"/api/connectors/{cid}", json=moved)).status_code == 200
        await client.post(f"/api/connectors/{cid}/start")
        rows = await records(10)
    first = {r["session_id"] for r in rows if r["data"]["t"] <= 5}
    second = {r["session_id"] for r in rows if r["data"]["t"] > 5}
    assert len(first) == len(second) == 1  # one id per run
    assert first != second  # a new one on every start
    assert all(re.fullmatch(r"sess_[0-9a-f]{12}", s) for s in first | second)
    assert [r["source_id"] for r in rows] == [str(r["data"]["t"]) for r in rows]
