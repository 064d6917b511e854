"""Normalizers against messages as the exchanges document them, field by field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from engine.errors import BadMessage
from engine.models import Record
from engine.normalize import ACK, PONG, Context, Control, decode, normalizer_for
from engine.normalize.common import decimal_text, epoch_to_datetime

RECEIVED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms(value: int) -> datetime:
    return EPOCH + timedelta(milliseconds=value)


def run(exchange: str, frame: bytes | str) -> list[Record] | Control:
    msg, raw = decode(frame)
    return normalizer_for(exchange)(msg, raw, Context("conn_x", exchange), RECEIVED)


# OKX v5 docs, "Trades channel" push data example.
OKX_TRADES = (
    b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",'
    b'"tradeId":"130639474","px":"42219.9","sz":"0.12060306","side":"buy",'
    b'"ts":"1630048897897","count":"3","source":"0","seqId":1234}]}'
)


def test_okx_trade_fields() -> None:
    records = run("okx", OKX_TRADES)
    assert isinstance(records, list)
    [r] = records
    assert r.connector_id == "conn_x"
    assert r.exchange == "okx"
    assert r.instrument == "BTC-USDT"
    assert r.price == "42219.9"
    assert r.size == "0.12060306"
    assert r.side == "buy"
    assert r.message_type == "trade"
    assert r.timestamp == ms(1630048897897) == datetime(2021, 8, 27, 7, 21, 37, 897000, tzinfo=UTC)
    assert r.received_at == RECEIVED
    assert r.dedup_key == "t:BTC-USDT:130639474"
    assert orjson.loads(r.data)["tradeId"] == "130639474"


def test_okx_message_with_several_trades_gives_one_record_each() -> None:
    items = [
        {
            "instId": "ETH-USDT",
            "tradeId": str(i),
            "px": "1.10",
            "sz": "2",
            "side": "sell",
            "ts": "1",
        }
        for i in range(3)
    ]
    frame = orjson.dumps({"arg": {"channel": "trades", "instId": "ETH-USDT"}, "data": items})
    records = run("okx", frame)
    assert isinstance(records, list)
    assert [r.dedup_key for r in records] == ["t:ETH-USDT:0", "t:ETH-USDT:1", "t:ETH-USDT:2"]
    assert {r.price for r in records} == {"1.10"}  # trailing zero kept: exact digits


def test_okx_ticker() -> None:
    # OKX v5 docs, "Tickers channel" push data example (abridged).
    frame = (
        b'{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"instType":"SPOT",'
        b'"instId":"BTC-USDT","last":"9999.99","lastSz":"0.1","askPx":"9999.99","askSz":"11",'
        b'"bidPx":"8888.88","bidSz":"5","open24h":"9000","ts":"1597026383085"}]}'
    )
    [r] = run("okx", frame)  # type: ignore[misc]
    assert (r.instrument, r.price, r.size, r.message_type) == (
        "BTC-USDT",
        "9999.99",
        "0.1",
        "ticker",
    )
    assert r.timestamp == ms(1597026383085)
    assert r.dedup_key.startswith("h:")


def test_okx_control_messages() -> None:
    assert (
        run(
            "okx",
            b'{"event":"subscribe","arg":{"channel":"trades","instId":"BTC-USDT"},"connId":"a4d3ae55"}',
        )
        == ACK
    )
    assert run("okx", b"pong") == PONG
    error = run(
        "okx", b'{"event":"error","code":"60012","msg":"Invalid request","connId":"a4d3ae55"}'
    )
    assert error == Control("error", "OKX error 60012: Invalid request")


# Binance spot docs, "Trade Streams" payload.
BINANCE_TRADE = (
    b'{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100",'
    b'"T":1672515782136,"m":true,"M":true}'
)


def test_binance_raw_trade() -> None:
    [r] = run("binance", BINANCE_TRADE)  # type: ignore[misc]
    assert r.instrument == "BNBBTC"
    assert (r.price, r.size) == ("0.001", "100")
    assert r.side == "sell"  # buyer is the maker, so the taker sold
    assert r.message_type == "trade"
    assert r.timestamp == ms(1672515782136)
    assert r.dedup_key == "t:BNBBTC:12345"
    assert r.data == BINANCE_TRADE  # the raw frame itself is the payload


def test_binance_combined_stream_envelope() -> None:
    frame = b'{"stream":"bnbbtc@trade","data":' + BINANCE_TRADE + b"}"
    [r] = run("binance", frame)  # type: ignore[misc]
    assert r.dedup_key == "t:BNBBTC:12345"
    assert orjson.loads(r.data) == orjson.loads(BINANCE_TRADE)


def test_binance_agg_trade() -> None:
    # Binance spot docs, "Aggregate Trade Streams" payload.
    frame = (
        b'{"e":"aggTrade","E":1672515782136,"s":"BNBBTC","a":12345,"p":"0.001","q":"100",'
        b'"f":100,"l":105,"T":1672515782136,"m":false,"M":true}'
    )
    [r] = run("binance", frame)  # type: ignore[misc]
    assert (r.side, r.dedup_key) == ("buy", "a:BNBBTC:12345")


def test_binance_subscribe_answer_is_an_ack() -> None:
    assert run("binance", b'{"result":null,"id":1}') == ACK
    error = run("binance", b'{"error":{"code":2,"msg":"Invalid request"},"id":1}')
    assert isinstance(error, Control)
    assert error.kind == "error"


def test_generic_json_keeps_payload_and_guesses_columns() -> None:
    frame = b'{"symbol":"AAPL","price":189.5,"qty":"10","timestamp":"2024-05-01T12:00:00Z"}'
    [r] = run("custom", frame)  # type: ignore[misc]
    assert (r.exchange, r.instrument, r.price, r.size) == ("custom", "AAPL", "189.5", "10")
    assert r.timestamp == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert r.data == frame


def test_generic_array_gives_one_record_per_object() -> None:
    records = run("custom", b'[{"a":1},{"b":2}]')
    assert isinstance(records, list)
    assert len(records) == 2
    assert records[0].timestamp == RECEIVED  # no time in the message: receive time


@pytest.mark.parametrize(
    ("frame", "category"),
    [
        (b"not json", "non_json"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (b'{"a":NaN}', "non_json"),
        (b'{"a":"\\ud800"}', "non_json"),
        (b'{"a":"\\u0000"}', "nul_character"),
        (b"42", "bad_shape"),
    ],
)
def test_bad_frames_are_classified(frame: bytes, category: str) -> None:
    with pytest.raises(BadMessage) as info:
        run("custom", frame)
    assert info.value.category == category


@pytest.mark.parametrize("price", ['"abc"', '"NaN"', '"1e99999"', "true", '"' + "9" * 200 + '"'])
def test_bad_prices_are_rejected(price: str) -> None:
    frame = b'{"e":"trade","s":"X","t":1,"p":' + price.encode() + b',"q":"1","T":1}'
    with pytest.raises(BadMessage):
        run("binance", frame)


def test_decimal_text_is_exact() -> None:
    assert decimal_text("0.00000001", "p") == "0.00000001"
    assert decimal_text("1.50", "p") == "1.50"
    assert decimal_text("1e-8", "p") == "1E-8"  # Decimal's text: a JSON number too
    assert decimal_text("+1.50", "p") == "1.50"
    assert decimal_text(".5", "p") == "0.5"
    assert decimal_text("007.10", "p") == "7.10"
    assert decimal_text(12, "p") == "12"
    assert decimal_text(0.1, "p") == "0.1"
    assert decimal_text(None, "p") is None


def test_epoch_magnitudes() -> None:
    expected = ms(1630048097000)
    for value in (1630048097, 1630048097000, "1630048097000000", 1630048097000000000):
        assert epoch_to_datetime(value, "ts") == expected
