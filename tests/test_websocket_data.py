"""``/api/websocket/save``, ``save-batch``, ``data`` and ``data/count``: commit before 201,
normalization, filters, sorting, keyset pagination, streaming, injection."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import trio
import trio_websocket

from server.serve import Service

from .fake_exchange import binance_trade, okx_trades

pytestmark = pytest.mark.e2e


@pytest.fixture
async def client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        yield http


async def test_save_commits_normalizes_and_broadcasts(
    client: httpx.AsyncClient, service: Service
) -> None:
    ws_url = service.url.replace("http://", "ws://") + "/api/realtime"
    async with trio_websocket.open_websocket_url(ws_url) as ws:
        await ws.get_message()
        body = {"data": orjson.loads(okx_trades(10, 3)), "exchange": "okx", "connector_id": "ext"}
        response = await client.post("/api/websocket/save", json=body)
        assert response.status_code == 201
        saved = response.json()
        assert saved["stored"] == 3
        assert saved["duplicates"] == 0
        # Committed before the answer: readable at once, and broadcast under the same ids.
        page = (
            await client.get("/api/websocket/data?connector_id=ext&sort_by=id&sort_order=1")
        ).json()
        assert [r["id"] for r in page["data"]] == saved["ids"]
        assert [r["data"]["tradeId"] for r in page["data"]] == ["10", "11", "12"]
        assert page["data"][0]["price"] == 42010.5
        with trio.fail_after(10):
            events = [orjson.loads(await ws.get_message()) for _ in range(3)]
        assert [e["id"] for e in events] == saved["ids"]
        # Saving the same trades again stores nothing twice (the exchange's trade ids).
        again = (await client.post("/api/websocket/save", json=body)).json()
        assert (again["stored"], again["duplicates"]) == (0, 3)


async def test_save_with_overrides_and_idempotency_key(client: httpx.AsyncClient) -> None:
    body = {
        "data": {"anything": True},
        "instrument": "EUR/USD",
        "price": "1.08450",
        "size": 1000000,
        "side": "buy",
        "message_type": "quote",
        "timestamp": "2026-01-01T00:00:00Z",
        "idempotency_key": "client-42",
    }
    first = (await client.post("/api/websocket/save", json=body)).json()
    second = (await client.post("/api/websocket/save", json=body)).json()
    assert first["stored"] == 1
    assert second["stored"] == 0
    page = await client.get("/api/websocket/data?instrument=EUR/USD")
    assert '"price":1.08450,"size":1000000,' in page.text  # JSON numbers, exact digits
    [record] = page.json()["data"]
    assert (record["price"], record["size"], record["side"]) == (1.0845, 1000000, "buy")
    as_text = await client.get("/api/websocket/data?instrument=EUR/USD&numbers=string")
    [record] = as_text.json()["data"]
    assert (record["price"], record["size"]) == ("1.08450", "1000000")
    assert record["message_type"] == "quote"
    assert record["timestamp"] == "2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body", "data"]),
        ({"data": "text"}, ["body", "data"]),
        ({"data": []}, ["body", "data"]),
        ({"data": {"a": "\u0000"}}, ["body", "data", "a"]),
        ({"data": {}, "price": "abc"}, ["body", "price"]),
        ({"data": {}, "format": "NYSE"}, ["body", "format"]),
        ({"data": {}, "exchange": "bad exchange!"}, ["body", "exchange"]),
        ({"data": {}, "id": 5}, ["body", "id"]),
    ],
)
async def test_bad_saves_are_422(client: httpx.AsyncClient, body: object, loc: list[str]) -> None:
    response = await client.post("/api/websocket/save", json=body)
    assert response.status_code == 422, response.text
    assert loc in [e["loc"] for e in response.json()["detail"]]


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"price": "NaN"}},
        {"data": {"event": "subscribe"}, "exchange": "okx"},
        {"data": [1, "two", None]},
    ],
)
async def test_messages_without_market_data_are_stored_whole(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    # The original service stored every message it was given; so does Sluice, as one
    # record holding the message when its normalizer finds no columns in it.
    response = await client.post("/api/websocket/save", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["stored"] == 1
    [record] = (await client.get("/api/websocket/data")).json()["data"]
    assert record["data"] == body["data"]
    assert record["message_type"] == "message"


async def test_save_batch_stores_batch_row_and_messages(client: httpx.AsyncClient) -> None:
    messages = [{"data": orjson.loads(binance_trade(n))} for n in range(1, 6)]
    body = {"messages": messages, "metrics": {"latency_ms": 3.5}, "exchange": "binance"}
    response = await client.post("/api/websocket/save-batch", json=body)
    assert response.status_code == 201
    result = response.json()
    assert (result["message_count"], result["stored"]) == (5, 5)
    batches = (await client.get("/api/websocket/data?collection_type=batches")).json()
    [batch] = batches["data"]
    assert batch["id"] == result["batch_id"]
    assert batch["metrics"] == {"latency_ms": 3.5}
    assert batch["message_count"] == 5
    stored = (await client.get("/api/websocket/data?exchange=binance&limit=10")).json()["data"]
    assert {r["batch_id"] for r in stored} == {result["batch_id"]}
    bad = {"messages": [{"data": {}}, {"data": 7}]}
    response = await client.post("/api/websocket/save-batch", json=bad)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "messages", 1, "data"]


async def test_filters_sorting_keyset_pages_and_count(client: httpx.AsyncClient) -> None:
    messages = [
        {"data": orjson.loads(binance_trade(n, "BTCUSDT" if n % 2 else "ETHUSDT"))}
        for n in range(1, 301)
    ]
    await client.post(
        "/api/websocket/save-batch", json={"messages": messages, "exchange": "binance"}
    )
    count = (await client.get("/api/websocket/data/count?instrument=ETHUSDT")).json()
    assert count == {"count": 150}
    ranged = "/api/websocket/data/count?from=1700000000100&to=1700000000200"
    assert (await client.get(ranged)).json() == {"count": 100}

    seen: list[int] = []
    url = "/api/websocket/data?instrument=BTCUSDT&sort_by=id&limit=40"
    while url:
        page = (await client.get(url)).json()
        seen.extend(r["id"] for r in page["data"])
        after = page["next_after_id"]
        url = (
            f"/api/websocket/data?instrument=BTCUSDT&sort_by=id&limit=40&after_id={after}"
            if after
            else ""
        )
    assert len(seen) == 150
    assert seen == sorted(seen, reverse=True)

    by_price = (await client.get("/api/websocket/data?sort_by=price&sort_order=1&limit=3")).json()
    prices = [float(r["price"]) for r in by_price["data"]]
    assert prices == sorted(prices)
    skipped = (await client.get("/api/websocket/data?sort_by=id&skip=295&limit=10")).json()
    assert skipped["count"] == 5


async def test_large_page_streams(client: httpx.AsyncClient) -> None:
    messages = [{"data": orjson.loads(binance_trade(n))} for n in range(1, 2501)]
    await client.post(
        "/api/websocket/save-batch", json={"messages": messages, "exchange": "binance"}
    )
    async with client.stream("GET", "/api/websocket/data?limit=100000") as response:
        assert response.headers.get("content-length") is None  # chunked, not built in memory
        body = b"".join([chunk async for chunk in response.aiter_bytes()])
    page = orjson.loads(body)
    assert page["count"] == 2500
    assert len({r["id"] for r in page["data"]}) == 2500


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("sort_by=price;DROP TABLE websocket_messages", ["query", "sort_by"]),
        ("sort_by=data", ["query", "sort_by"]),
        ("limit=100001", ["query", "limit"]),
        ("limit=0", ["query", "limit"]),
        ("collection_type=everything", ["query", "collection_type"]),
        ("from=yesterday", ["query", "from"]),
        ("from=2026-02-30T00:00:00Z", ["query", "from"]),
        ("numbers=float", ["query", "numbers"]),
        ("after_id=x&sort_by=id", ["query", "after_id"]),
        ("exchange'=1", ["query", "exchange'"]),
    ],
)
async def test_bad_data_queries_are_422(
    client: httpx.AsyncClient, query: str, loc: list[str]
) -> None:
    response = await client.get(f"/api/websocket/data?{query}")
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc
    count = await client.get("/api/websocket/data/count")
    assert count.status_code == 200  # the table is still there


async def test_injection_in_filter_values_is_just_a_value(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/websocket/data?instrument=x' OR '1'='1")
    assert response.status_code == 200
    assert response.json()["count"] == 0


@pytest.mark.parametrize(
    "query",
    [
        "from=2026-02-01&to=2026-01-01",  # an empty range, not an error
        "after_id=5",  # an id filter without keyset sorting
        "collection_type=batches&sort_by=price",  # batches have no price: ordered by id
        "to=2026-01-01T23:59:60.123456789%2B05:30",  # every RFC 3339 time parses
        "to=0001-01-01T00:00:00%2B01:00",
    ],
)
async def test_queries_the_schema_calls_valid_are_answered(
    client: httpx.AsyncClient, query: str
) -> None:
    for path in ("/api/websocket/data", "/api/websocket/data/count"):
        if path.endswith("count") and ("after_id" in query or "sort_by" in query):
            continue
        response = await client.get(f"{path}?{query}")
        assert response.status_code == 200, response.text


async def test_csv_download_is_the_data_query_as_csv(client: httpx.AsyncClient) -> None:
    """``/api/websocket/data.csv`` takes the data query's parameters and answers the same
    rows as CSV: a header, numbers with their stored digits, the payload as JSON text."""
    for trade_id in (1, 2, 3):
        body = {
            "exchange": "binance",
            "connector_id": "csv",
            "data": orjson.loads(binance_trade(trade_id)),
        }
        assert (await client.post("/api/websocket/save", json=body)).status_code == 201
    response = await client.get(
        "/api/websocket/data.csv?connector_id=csv&sort_by=id&sort_order=1&limit=2"
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(response.text)))
    header, first, second = rows  # limit=2: two records after the header
    assert header[0] == "id"
    assert header[-1] == "data"
    record = dict(zip(header, first, strict=True))
    assert record["connector_id"] == "csv"
    assert record["price"] == orjson.loads(binance_trade(1))["p"]  # the source's digits
    assert orjson.loads(record["data"]) == orjson.loads(binance_trade(1))
    assert int(dict(zip(header, second, strict=True))["id"]) > int(record["id"])
    bad = await client.get("/api/websocket/data.csv?limit=0")
    assert bad.status_code == 422
    assert "limit" in bad.text


async def test_every_connector_status_in_one_answer(
    client: httpx.AsyncClient, service: Service
) -> None:
    created = await client.post(
        "/api/connectors", json={"name": "s", "api_url": "ws://127.0.0.1:9/never"}
    )
    cid = created.json()["connector_id"]
    await client.post(f"/api/connectors/{cid}/start")
    body = (await client.get("/api/connectors/statuses")).json()
    assert body["count"] == len(body["data"]) == 1
    [status] = body["data"]
    assert status["connector_id"] == cid
    assert status["status"] in ("connecting", "reconnecting", "running", "error")
    assert {"messages_received", "records_stored", "messages_gap", "errors"} <= set(status)
