"""Coinbase, Kraken v2, Bybit v5, Bitstamp and the rest of Binance, against messages as
the exchanges publish them in their API documentation; expected output field by field.
Then per-connector field mappings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from engine.errors import BadMessage
from engine.models import Record
from engine.normalize import ACK, PONG, Context, Control, FieldMapping, decode, normalizer_for

RECEIVED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms(value: int) -> datetime:
    return EPOCH + timedelta(milliseconds=value)


def run(
    exchange: str, frame: bytes, mapping: dict[str, str] | None = None
) -> list[Record] | Control:
    msg, raw = decode(frame)
    return normalizer_for(exchange, mapping)(msg, raw, Context("conn_x", exchange), RECEIVED)


def one(exchange: str, frame: bytes) -> Record:
    result = run(exchange, frame)
    assert isinstance(result, list)
    assert len(result) == 1
    return result[0]


def columns(r: Record) -> dict[str, object]:
    return {
        "instrument": r.instrument,
        "price": r.price,
        "size": r.size,
        "side": r.side,
        "message_type": r.message_type,
        "timestamp": r.timestamp,
        "bid": (r.bid_price, r.bid_size),
        "ask": (r.ask_price, r.ask_size),
        "key": r.dedup_key,
    }


# --- Binance ----------------------------------------------------------------------------


def test_binance_book_ticker() -> None:
    frame = (
        b'{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000",'
        b'"a":"25.36520000","A":"40.66000000"}'
    )
    assert columns(one("binance", frame)) == {
        "instrument": "BNBUSDT",
        "price": None,
        "size": None,
        "side": None,
        "message_type": "book_ticker",
        "timestamp": RECEIVED,
        "bid": ("25.35190000", "31.21000000"),
        "ask": ("25.36520000", "40.66000000"),
        "key": "b:BNBUSDT:400900217",
    }


def test_binance_24hr_ticker() -> None:
    frame = (
        b'{"e":"24hrTicker","E":1672515782136,"s":"BNBBTC","p":"0.0015","P":"250.00",'
        b'"w":"0.0018","x":"0.0009","c":"0.0025","Q":"10","b":"0.0024","B":"10","a":"0.0026",'
        b'"A":"100","o":"0.0010","h":"0.0025","l":"0.0010","v":"10000","q":"18","O":0,'
        b'"C":86400000,"F":0,"L":18150,"n":18151}'
    )
    r = one("binance", frame)
    assert (r.message_type, r.instrument, r.price, r.size) == ("ticker", "BNBBTC", "0.0025", "10")
    assert (r.bid_price, r.bid_size, r.ask_price, r.ask_size) == ("0.0024", "10", "0.0026", "100")
    assert r.timestamp == ms(1672515782136)


def test_binance_mini_ticker_and_kline_in_combined_envelope() -> None:
    mini = (
        b'{"stream":"bnbbtc@miniTicker","data":{"e":"24hrMiniTicker","E":1672515782136,'
        b'"s":"BNBBTC","c":"0.0025","o":"0.0010","h":"0.0025","l":"0.0010","v":"10000","q":"18"}}'
    )
    r = one("binance", mini)
    assert (r.message_type, r.price, r.size, r.bid_price) == ("mini_ticker", "0.0025", None, None)
    kline = (
        b'{"e":"kline","E":1672515782136,"s":"BNBBTC","k":{"t":1672515780000,'
        b'"T":1672515839999,"s":"BNBBTC","i":"1m","f":100,"L":200,"o":"0.0010","c":"0.0020",'
        b'"h":"0.0025","l":"0.0015","v":"1000","n":100,"x":false,"q":"1.0000","V":"500",'
        b'"Q":"0.500","B":"123456"}}'
    )
    k = one("binance", kline)
    assert (k.message_type, k.instrument, k.price, k.size) == ("kline", "BNBBTC", "0.0020", "1000")
    assert k.timestamp == ms(1672515780000)  # the candle's open time


# --- Coinbase ---------------------------------------------------------------------------


def test_coinbase_match_records_the_taker_side() -> None:
    frame = (
        b'{"type":"match","trade_id":10,"sequence":50,'
        b'"maker_order_id":"ac928c66-ca53-498f-9c13-a110027a60e8",'
        b'"taker_order_id":"132fb6ae-456b-4654-b4e0-d681ac05cea1",'
        b'"time":"2014-11-07T08:19:27.028459Z","product_id":"BTC-USD","size":"5.23512",'
        b'"price":"400.23","side":"sell"}'
    )
    assert columns(one("coinbase", frame)) == {
        "instrument": "BTC-USD",
        "price": "400.23",
        "size": "5.23512",
        "side": "buy",  # the maker sold, so the taker bought
        "message_type": "trade",
        "timestamp": datetime(2014, 11, 7, 8, 19, 27, 28459, tzinfo=UTC),
        "bid": (None, None),
        "ask": (None, None),
        "key": "t:BTC-USD:10",
    }


def test_coinbase_ticker() -> None:
    frame = (
        b'{"type":"ticker","sequence":37475248783,"product_id":"ETH-USD","price":"1285.22",'
        b'"open_24h":"1310.79","volume_24h":"245532.79269678","low_24h":"1280.52",'
        b'"high_24h":"1313.8","volume_30d":"9788783.60117027","best_bid":"1285.04",'
        b'"best_bid_size":"0.46688654","best_ask":"1285.27","best_ask_size":"1.56637040",'
        b'"side":"buy","time":"2022-10-19T23:28:22.061769Z","trade_id":370843401,'
        b'"last_size":"11.4396987"}'
    )
    r = one("coinbase", frame)
    assert (r.message_type, r.price, r.size) == ("ticker", "1285.22", "11.4396987")
    assert (r.bid_price, r.bid_size) == ("1285.04", "0.46688654")
    assert (r.ask_price, r.ask_size) == ("1285.27", "1.56637040")
    assert r.dedup_key == "t:ETH-USD:37475248783"


def test_coinbase_advanced_trade_market_trades() -> None:
    frame = (
        b'{"channel":"market_trades","client_id":"","timestamp":"2023-02-09T20:19:35.39625135Z",'
        b'"sequence_num":0,"events":[{"type":"snapshot","trades":[{"trade_id":"000000000",'
        b'"product_id":"ETH-USD","price":"1260.01","size":"0.3","side":"BUY",'
        b'"time":"2019-08-14T20:42:27.265Z"}]}]}'
    )
    r = one("coinbase", frame)
    assert (r.instrument, r.price, r.size, r.side) == ("ETH-USD", "1260.01", "0.3", "buy")
    assert r.dedup_key == "t:ETH-USD:000000000"


def test_coinbase_control_messages() -> None:
    assert run("coinbase", b'{"type":"subscriptions","channels":[{"name":"matches"}]}') == ACK
    error = run("coinbase", b'{"type":"error","message":"Failed to subscribe","reason":"bad"}')
    assert isinstance(error, Control)
    assert error.kind == "error"


# --- Kraken v2 --------------------------------------------------------------------------


def test_kraken_trade_keeps_number_digits() -> None:
    frame = (
        b'{"channel":"trade","type":"update","data":[{"symbol":"MATIC/USD","side":"sell",'
        b'"price":0.5117,"qty":40.0,"ord_type":"market","trade_id":4665906,'
        b'"timestamp":"2023-09-25T07:49:37.708706Z"}]}'
    )
    assert columns(one("kraken", frame)) == {
        "instrument": "MATIC/USD",
        "price": "0.5117",
        "size": "40.0",
        "side": "sell",
        "message_type": "trade",
        "timestamp": datetime(2023, 9, 25, 7, 49, 37, 708706, tzinfo=UTC),
        "bid": (None, None),
        "ask": (None, None),
        "key": "t:MATIC/USD:4665906",
    }


def test_kraken_ticker_and_control() -> None:
    frame = (
        b'{"channel":"ticker","type":"snapshot","data":[{"symbol":"ALGO/USD","bid":0.10025,'
        b'"bid_qty":740.0,"ask":0.10036,"ask_qty":1361.44641,"last":0.10035,'
        b'"volume":997038.98383,"vwap":0.10148,"low":0.09979,"high":0.10285,'
        b'"change":-0.00017,"change_pct":-0.17}]}'
    )
    r = one("kraken", frame)
    assert (r.price, r.bid_price, r.bid_size, r.ask_price, r.ask_size) == (
        "0.10035",
        "0.10025",
        "740.0",
        "0.10036",
        "1361.44641",
    )
    assert run("kraken", b'{"channel":"heartbeat"}') == ACK
    assert run("kraken", b'{"method":"pong","req_id":1}') == PONG
    ack = b'{"method":"subscribe","result":{"channel":"ticker","symbol":"ALGO/USD"},"success":true}'
    assert run("kraken", ack) == ACK
    failed = run(
        "kraken", b'{"method":"subscribe","success":false,"error":"Currency pair not supported"}'
    )
    assert isinstance(failed, Control)
    assert failed.kind == "error"


# --- Bybit v5 ---------------------------------------------------------------------------


def test_bybit_public_trade() -> None:
    frame = (
        b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":[{'
        b'"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50","L":"PlusTick",'
        b'"i":"20f43950-d8dd-5b31-9112-a178eb6023af","BT":false}]}'
    )
    assert columns(one("bybit", frame)) == {
        "instrument": "BTCUSDT",
        "price": "16578.50",
        "size": "0.001",
        "side": "buy",
        "message_type": "trade",
        "timestamp": ms(1672304486865),
        "bid": (None, None),
        "ask": (None, None),
        "key": "t:BTCUSDT:20f43950-d8dd-5b31-9112-a178eb6023af",
    }


def test_bybit_linear_ticker_and_control() -> None:
    frame = (
        b'{"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT",'
        b'"tickDirection":"PlusTick","price24hPcnt":"0.017103","lastPrice":"17216.00",'
        b'"prevPrice24h":"16926.50","highPrice24h":"17281.50","lowPrice24h":"16915.00",'
        b'"bid1Price":"17215.50","bid1Size":"84.489","ask1Price":"17216.00","ask1Size":"83.020"},'
        b'"cs":24987956059,"ts":1673272861686}'
    )
    r = one("bybit", frame)
    assert (r.message_type, r.price, r.timestamp) == ("ticker", "17216.00", ms(1673272861686))
    assert (r.bid_price, r.bid_size, r.ask_price, r.ask_size) == (
        "17215.50",
        "84.489",
        "17216.00",
        "83.020",
    )
    ack = (
        b'{"success":true,"ret_msg":"subscribe","conn_id":"2324d924","req_id":"","op":"subscribe"}'
    )
    assert run("bybit", ack) == ACK
    pong = b'{"success":true,"ret_msg":"pong","conn_id":"0970e817","req_id":"","op":"ping"}'
    assert run("bybit", pong) == PONG


# --- Bitstamp ---------------------------------------------------------------------------


def test_bitstamp_trade() -> None:
    frame = (
        b'{"data":{"id":295287411,"timestamp":"1694079437","amount":0.0021,'
        b'"amount_str":"0.00210000","price":25837,"price_str":"25837","type":0,'
        b'"microtimestamp":"1694079437032000","buy_order_id":1665391236886528,'
        b'"sell_order_id":1665391238463489},"channel":"live_trades_btcusd","event":"trade"}'
    )
    assert columns(one("bitstamp", frame)) == {
        "instrument": "btcusd",
        "price": "25837",
        "size": "0.00210000",
        "side": "buy",
        "message_type": "trade",
        "timestamp": datetime(2023, 9, 7, 9, 37, 17, 32000, tzinfo=UTC),
        "bid": (None, None),
        "ask": (None, None),
        "key": "t:btcusd:295287411",
    }
    ok = b'{"event":"bts:subscription_succeeded","channel":"live_trades_btcusd","data":{}}'
    assert run("bitstamp", ok) == ACK


# --- field mapping ----------------------------------------------------------------------

MAPPING = {
    "records": "payload.trades",
    "instrument": "$.market",
    "price": "px",
    "size": "qty",
    "side": "dir",
    "timestamp": "t",
    "id": "n",
    "type": "$.kind",
}


def test_field_mapping_gives_custom_feeds_columns() -> None:
    frame = orjson.dumps(
        {
            "market": "XAU/USD",
            "kind": "trade",
            "payload": {
                "trades": [
                    {"px": "2301.55", "qty": 2, "dir": "SELL", "t": 1700000000123, "n": 77},
                    {"px": "2301.60", "qty": 1, "dir": "BUY", "t": 1700000000456, "n": 78},
                ]
            },
        }
    )
    result = run("custom", frame, MAPPING)
    assert isinstance(result, list)
    assert [columns(r) for r in result] == [
        {
            "instrument": "XAU/USD",
            "price": "2301.55",
            "size": "2",
            "side": "sell",
            "message_type": "trade",
            "timestamp": ms(1700000000123),
            "bid": (None, None),
            "ask": (None, None),
            "key": "t:XAU/USD:77",
        },
        {
            "instrument": "XAU/USD",
            "price": "2301.60",
            "size": "1",
            "side": "buy",
            "message_type": "trade",
            "timestamp": ms(1700000000456),
            "bid": (None, None),
            "ask": (None, None),
            "key": "t:XAU/USD:78",
        },
    ]
    assert orjson.loads(result[0].data) == {
        "px": "2301.55",
        "qty": 2,
        "dir": "SELL",
        "t": 1700000000123,
        "n": 77,
    }


def test_field_mapping_list_indexes_and_missing_paths() -> None:
    mapping = {"price": "levels.0.1", "instrument": "sym"}
    [r] = run("custom", b'{"levels": [["bid", "10.5"]], "other": 1}', mapping)  # type: ignore[misc]
    assert (r.price, r.instrument) == ("10.5", None)
    with pytest.raises(BadMessage) as info:
        run("custom", b'{"nothing": 1}', {"records": "data.items"})
    assert info.value.category == "unmapped"


@pytest.mark.parametrize(
    "mapping", [{"colour": "a"}, {"price": ""}, {"price": "a..b"}, {"price": 5}]
)
def test_bad_mappings_are_refused(mapping: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"mapping|path"):
        FieldMapping.from_dict(mapping)
