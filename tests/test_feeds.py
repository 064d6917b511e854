"""Every frame a real feed sends is understood: Kraken v1 arrays and v2 books, Bitstamp
order books (the instrument only in the channel name), Bybit's older topics and v5
books, and shape detection for ``custom`` sources. Fixtures are written from each
exchange's public API documentation; each asserts the columns field by field."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from engine.models import Record
from engine.normalize import Context, Control, decode, normalizer_for
from engine.normalize.detect import exchange_of

RECEIVED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def run(exchange: str, frame: object) -> list[Record]:
    msg, raw = decode(orjson.dumps(frame))
    result = normalizer_for(exchange)(msg, raw, Context("conn_x", exchange, "sess_1"), RECEIVED)
    assert not isinstance(result, Control), result
    return result


def cols(r: Record) -> tuple[object, ...]:
    return (r.exchange, r.message_type, r.instrument, r.price, r.size, r.side)


def best(r: Record) -> tuple[object, ...]:
    return (r.bid_price, r.bid_size, r.ask_price, r.ask_size)


KRAKEN_V1_TRADE = [
    0,
    [
        ["5541.20000", "0.15850568", "1534614057.321597", "s", "l", ""],
        ["6060.00000", "0.02455000", "1534614057.324998", "b", "l", ""],
    ],
    "trade",
    "XBT/USD",
]
KRAKEN_V1_BOOK = [
    0,
    {
        "as": [["5541.30000", "2.50700000", "1534614248.123678"]],
        "bs": [["5541.20000", "1.52900000", "1534614248.765567"]],
    },
    "book-10",
    "XBT/USD",
]
KRAKEN_V1_UPDATE = [
    1234,
    {"a": [["5541.30000", "2.50700000", "1534614248.456738"]]},
    {"b": [["5541.30000", "0.00000000", "1534614335.345903"]]},
    "book-10",
    "XBT/USD",
]
KRAKEN_V1_TICKER = [
    0,
    {
        "a": ["5525.40000", 1, "1.000"],
        "b": ["5525.10000", 1, "1.000"],
        "c": ["5525.10000", "0.00398963"],
        "v": ["2634.11501494", "3591.17907851"],
    },
    "ticker",
    "XBT/USD",
]


def test_kraken_v1_trades_book_and_ticker() -> None:
    sell, buy = run("kraken", KRAKEN_V1_TRADE)
    assert cols(sell) == ("kraken", "trade", "XBT/USD", "5541.20000", "0.15850568", "sell")
    assert cols(buy)[5] == "buy"
    assert sell.timestamp == datetime.fromtimestamp(1534614057.321597, UTC)
    assert sell.session_id == "sess_1"
    [book] = run("kraken", KRAKEN_V1_BOOK)
    assert cols(book) == ("kraken", "book_snapshot", "XBT/USD", None, None, None)
    assert best(book) == ("5541.20000", "1.52900000", "5541.30000", "2.50700000")
    [delta] = run("kraken", KRAKEN_V1_UPDATE)  # two payloads: asks, then bids
    assert cols(delta)[:3] == ("kraken", "book_delta", "XBT/USD")
    assert best(delta) == (None, None, None, None)
    [ticker] = run("kraken", KRAKEN_V1_TICKER)
    assert cols(ticker) == ("kraken", "ticker", "XBT/USD", "5525.10000", "0.00398963", None)
    assert best(ticker) == ("5525.10000", "1.000", "5525.40000", "1.000")


def test_kraken_v1_events_are_control() -> None:
    for event in ({"event": "heartbeat"}, {"event": "systemStatus", "status": "online"}):
        msg, raw = decode(orjson.dumps(event))
        assert isinstance(
            normalizer_for("kraken")(msg, raw, Context(None, "kraken"), RECEIVED), Control
        )
    bad = {
        "event": "subscriptionStatus",
        "status": "error",
        "errorMessage": "Currency pair not supported",
    }
    msg, raw = decode(orjson.dumps(bad))
    result = normalizer_for("kraken")(msg, raw, Context(None, "kraken"), RECEIVED)
    assert isinstance(result, Control)
    assert result.kind == "error"


def test_kraken_v2_book_snapshot_and_update() -> None:
    frame = {
        "channel": "book",
        "type": "snapshot",
        "data": [
            {
                "symbol": "BTC/USD",
                "bids": [{"price": 45283.5, "qty": 0.1}, {"price": 45283.4, "qty": 1.2}],
                "asks": [{"price": 45285.2, "qty": 0.00100000}],
                "checksum": 2114181697,
            }
        ],
    }
    [snap] = run("kraken", frame)
    assert cols(snap) == ("kraken", "book_snapshot", "BTC/USD", None, None, None)
    assert best(snap) == ("45283.5", "0.1", "45285.2", "0.001")
    [upd] = run("kraken", {**frame, "type": "update"})
    assert upd.message_type == "book_delta"


def test_bitstamp_books_take_the_instrument_from_the_channel() -> None:
    frame = {
        "data": {
            "timestamp": "1643643584",
            "microtimestamp": "1643643584684047",
            "bids": [["2762.74", "1.50000000"], ["2762.50", "3.62000000"]],
            "asks": [["2763.48", "0.28000000"]],
        },
        "channel": "order_book_ethusd",
        "event": "data",
    }
    [book] = run("bitstamp", frame)
    assert cols(book) == ("bitstamp", "book_snapshot", "ethusd", None, None, None)
    assert best(book) == ("2762.74", "1.50000000", "2763.48", "0.28000000")
    assert book.timestamp == datetime.fromtimestamp(1643643584.684047, UTC)
    [diff] = run("bitstamp", {**frame, "channel": "diff_order_book_ethusd"})
    assert (diff.message_type, diff.instrument) == ("book_delta", "ethusd")


def test_bybit_older_topics_and_v5_books() -> None:
    trade = {
        "topic": "trade.BCHUSDT",
        "data": [
            {
                "symbol": "BCHUSDT",
                "tick_direction": "ZeroPlusTick",
                "price": "444.85",
                "size": 0.01,
                "timestamp": "2021-07-12T09:43:34.000Z",
                "trade_time_ms": "1626083014345",
                "side": "Sell",
                "trade_id": "3b8d2ab5-4e9d-5e0e-8b2f-a06b4b4c1d8e",
            }
        ],
    }
    [t] = run("bybit", trade)
    assert cols(t) == ("bybit", "trade", "BCHUSDT", "444.85", "0.01", "sell")
    assert t.source_id == "3b8d2ab5-4e9d-5e0e-8b2f-a06b4b4c1d8e"
    l2 = {
        "topic": "orderBookL2_25.BTCUSD",
        "type": "snapshot",
        "data": [
            {"price": "2999.00", "symbol": "BTCUSD", "id": 29990000, "side": "Buy", "size": 9},
            {"price": "3000.00", "symbol": "BTCUSD", "id": 30000000, "side": "Buy", "size": 7},
            {"price": "3001.00", "symbol": "BTCUSD", "id": 30010000, "side": "Sell", "size": 4},
        ],
    }
    [snap] = run("bybit", l2)
    assert cols(snap) == ("bybit", "book_snapshot", "BTCUSD", None, None, None)
    assert best(snap) == ("3000.00", "7", "3001.00", "4")
    delta = {
        "topic": "orderBookL2_25.BTCUSD",
        "type": "delta",
        "data": {"delete": [], "update": [], "insert": []},
    }
    [d] = run("bybit", delta)
    assert (d.message_type, d.instrument) == ("book_delta", "BTCUSD")
    v5 = {
        "topic": "orderbook.50.BTCUSDT",
        "type": "snapshot",
        "ts": 1672304484978,
        "data": {
            "s": "BTCUSDT",
            "b": [["16493.50", "0.006"]],
            "a": [["16611.00", "0.029"]],
            "u": 18521288,
            "seq": 7961638724,
        },
    }
    [book] = run("bybit", v5)
    assert cols(book) == ("bybit", "book_snapshot", "BTCUSDT", None, None, None)
    assert best(book) == ("16493.50", "0.006", "16611.00", "0.029")


@pytest.mark.parametrize(
    ("frame", "exchange", "kind", "side"),
    [
        (
            {
                "arg": {"channel": "trades", "instId": "BTC-USDT"},
                "data": [
                    {
                        "instId": "BTC-USDT",
                        "tradeId": "1",
                        "px": "42219.9",
                        "sz": "0.1",
                        "side": "buy",
                        "ts": "1630048897897",
                    }
                ],
            },
            "okx",
            "trade",
            "buy",
        ),
        (
            {
                "stream": "btcusdt@trade",
                "data": {
                    "e": "trade",
                    "E": 1,
                    "s": "BTCUSDT",
                    "t": 12345,
                    "p": "0.001",
                    "q": "100",
                    "T": 1,
                    "m": True,
                },
            },
            "binance",
            "trade",
            "sell",
        ),
        (
            {
                "e": "aggTrade",
                "E": 1,
                "s": "BNBBTC",
                "a": 12345,
                "p": "0.001",
                "q": "100",
                "T": 1,
                "m": False,
            },
            "binance",
            "trade",
            "buy",
        ),
        (
            {
                "type": "match",
                "trade_id": 10,
                "product_id": "BTC-USD",
                "price": "400.23",
                "size": "5.23",
                "side": "sell",
                "time": "2014-11-07T08:19:27.028459Z",
            },
            "coinbase",
            "trade",
            "buy",
        ),
        (KRAKEN_V1_TRADE, "kraken", "trade", "sell"),
        (
            {
                "topic": "publicTrade.BTCUSDT",
                "data": [
                    {"T": 1, "s": "BTCUSDT", "S": "Buy", "v": "0.001", "p": "16578.50", "i": "x"}
                ],
            },
            "bybit",
            "trade",
            "buy",
        ),
        (
            {
                "event": "trade",
                "channel": "live_trades_btcusd",
                "data": {
                    "id": 1,
                    "price_str": "1.5",
                    "amount_str": "2",
                    "type": 0,
                    "microtimestamp": "1643643584684047",
                },
            },
            "bitstamp",
            "trade",
            "buy",
        ),
    ],
)
def test_custom_sources_are_recognized_by_shape(
    frame: object, exchange: str, kind: str, side: str
) -> None:
    assert exchange_of(frame) == exchange
    records = run("custom", frame)
    assert records
    assert {(r.exchange, r.message_type) for r in records} == {(exchange, kind)}
    assert records[0].side == side


def test_unknown_shapes_stay_generic_and_explicit_exchanges_win() -> None:
    [r] = run("custom", {"symbol": "X", "price": "1.5"})
    assert (r.exchange, r.message_type, r.price) == ("custom", "message", "1.5")
    # A Binance frame on a connector that says it is something else is not re-detected.
    [g] = run(
        "bitfinex", {"e": "trade", "s": "BTCUSDT", "t": 1, "p": "1", "q": "1", "T": 1, "m": True}
    )
    assert (g.exchange, g.side) == ("bitfinex", None)


def test_okx_books() -> None:
    snapshot = {
        "arg": {"channel": "books", "instId": "BTC-USDT"},
        "action": "snapshot",
        "data": [
            {
                "asks": [["8476.98", "415", "0", "13"], ["8477", "7", "0", "2"]],
                "bids": [["8476.97", "256", "0", "12"]],
                "ts": "1597026383085",
                "checksum": -855196043,
                "seqId": 123456,
            }
        ],
    }
    [book] = run("okx", snapshot)
    assert cols(book) == ("okx", "book_snapshot", "BTC-USDT", None, None, None)
    assert best(book) == ("8476.97", "256", "8476.98", "415")
    [update] = run("okx", {**snapshot, "action": "update"})
    assert (update.message_type, best(update)) == ("book_delta", (None, None, None, None))
    five = {"arg": {"channel": "books5", "instId": "ETH-USDT"}, "data": snapshot["data"]}
    [top] = run("okx", five)  # books5 sends the whole top every time
    assert (top.message_type, top.instrument) == ("book_snapshot", "ETH-USDT")


def test_binance_depth_streams() -> None:
    partial = {
        "stream": "bnbbtc@depth5",
        "data": {"lastUpdateId": 160, "bids": [["0.0024", "10"]], "asks": [["0.0026", "100"]]},
    }
    [snap] = run("binance", partial)
    assert cols(snap) == ("binance", "book_snapshot", "BNBBTC", None, None, None)
    assert best(snap) == ("0.0024", "10", "0.0026", "100")
    diff = {
        "e": "depthUpdate",
        "E": 1672515782136,
        "s": "BNBBTC",
        "U": 157,
        "u": 160,
        "b": [["0.0024", "10"]],
        "a": [["0.0026", "100"]],
    }
    [delta] = run("binance", diff)
    assert cols(delta) == ("binance", "book_delta", "BNBBTC", None, None, None)
    assert delta.source_id == "160"


def test_coinbase_books_both_apis() -> None:
    snapshot = {
        "type": "snapshot",
        "product_id": "BTC-USD",
        "bids": [["10101.10", "0.45054140"]],
        "asks": [["10102.55", "0.57753524"]],
    }
    [snap] = run("coinbase", snapshot)
    assert cols(snap) == ("coinbase", "book_snapshot", "BTC-USD", None, None, None)
    assert best(snap) == ("10101.10", "0.45054140", "10102.55", "0.57753524")
    update = {
        "type": "l2update",
        "product_id": "BTC-USD",
        "time": "2019-08-14T20:42:27.265Z",
        "changes": [["buy", "10101.80000000", "0.162567"]],
    }
    [delta] = run("coinbase", update)
    assert (delta.message_type, delta.instrument) == ("book_delta", "BTC-USD")
    advanced = {
        "channel": "l2_data",
        "timestamp": "2023-02-09T20:32:50.714964855Z",
        "sequence_num": 0,
        "events": [
            {
                "type": "snapshot",
                "product_id": "BTC-USD",
                "updates": [
                    {"side": "bid", "price_level": "21921.73", "new_quantity": "0.06317902"},
                    {"side": "bid", "price_level": "21921.80", "new_quantity": "0.5"},
                    {"side": "offer", "price_level": "21923.00", "new_quantity": "0.1"},
                    {"side": "offer", "price_level": "21922.10", "new_quantity": "0.2"},
                ],
            }
        ],
    }
    [adv] = run("coinbase", advanced)
    assert cols(adv) == ("coinbase", "book_snapshot", "BTC-USD", None, None, None)
    assert best(adv) == ("21921.80", "0.5", "21922.10", "0.2")


def test_book_frames_are_recognized_by_shape_too() -> None:
    assert exchange_of({"e": "depthUpdate", "s": "BNBBTC", "u": 1, "b": [], "a": []}) == "binance"
    assert exchange_of({"type": "snapshot", "product_id": "BTC-USD", "bids": []}) == "coinbase"
    okx = {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "snapshot", "data": []}
    assert exchange_of(okx) == "okx"
    assert exchange_of(KRAKEN_V1_BOOK) == "kraken"
