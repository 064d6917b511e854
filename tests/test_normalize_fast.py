"""The fast path builds exactly the record the general path builds, or declines."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import BadMessage
from engine.models import Record
from engine.normalize import Context, decode, normalizer_for
from engine.normalize.fast import binance_trade

RECEIVED = datetime(2026, 12, 5, 12, 0, 0, 123456, tzinfo=UTC)
CTX = Context("conn_fast", "binance", "sess_1")

decimals = st.one_of(
    st.from_regex(r"-?(0|[1-9][0-9]{0,8})(\.[0-9]{1,8})?", fullmatch=True),
    st.sampled_from(["", "1e5", "NaN", "01.5", "+1.5", "1." + "9" * 70]),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
)
events = st.fixed_dictionaries(
    {
        "e": st.sampled_from(["trade", "aggTrade", "kline", "trade"]),
        "s": st.one_of(st.text(max_size=12), st.integers(-(10**6), 10**6), st.just("B" * 201)),
        "p": decimals,
        "q": decimals,
        "T": st.one_of(
            st.integers(1_600_000_000_000, 1_900_000_000_000),
            st.integers(0, 10**16),
            st.just("1700000000000"),
        ),
    },
    optional={
        "t": st.integers(-5, 10**12),
        "a": st.integers(0, 10**12),
        "m": st.one_of(st.booleans(), st.none()),
        "E": st.integers(1_600_000_000_000, 1_900_000_000_000),
        "x": st.text(max_size=5),
    },
)


def general(raw: bytes, ctx: Context) -> list[Record] | str:
    try:
        msg, payload = decode(raw)
        result = normalizer_for(ctx.exchange)(msg, payload, ctx, RECEIVED)
    except BadMessage as exc:
        return exc.category
    return result if isinstance(result, list) else repr(result)


@given(events)
def test_the_fast_path_equals_the_general_path_or_declines(event: dict[str, object]) -> None:
    raw = orjson.dumps(event)
    fast = binance_trade(raw, CTX, RECEIVED)
    if fast is not None:
        assert fast == general(raw, CTX)


@pytest.mark.parametrize("exchange", ["binance", "custom"])
def test_a_plain_trade_takes_the_fast_path(exchange: str) -> None:
    ctx = Context("conn_fast", exchange, "sess_1")
    for event in (
        {
            "e": "trade",
            "E": 1,
            "s": "BTCUSDT",
            "t": 7,
            "p": "42000.10",
            "q": "0.00100000",
            "T": 1700000000123,
            "m": True,
            "M": True,
        },
        {
            "e": "aggTrade",
            "s": "ETHUSDT",
            "a": 9,
            "p": "2000",
            "q": "1.5",
            "f": 1,
            "l": 2,
            "T": 1700000000999,
            "m": False,
        },
        {"e": "trade", "s": "BTCUSDT", "t": 8, "p": "1", "q": "2", "T": 1700000000000},
    ):
        raw = orjson.dumps(event)
        fast = binance_trade(raw, ctx, RECEIVED)
        assert fast is not None
        assert fast == general(raw, ctx)
        assert fast[0].data is raw  # the frame's own bytes, not a copy


@pytest.mark.parametrize(
    "raw",
    [
        b'{"e":"trade","s":"BTC\\u0000USDT","t":1,"p":"1","q":"1","T":1700000000000}',
        b'{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":1700000000000,"x":"\\ud800"}',
        b'{"e":"trade","s":"BTCUSDT","t":1,"p":"NaN","q":"1","T":1700000000000}',
        b'{"e":"trade","s":"BTCUSDT","t":1,"p":1.5,"q":"1","T":1700000000000}',
        b'{"e":"24hrTicker","s":"BTCUSDT"}',
        b'{"stream":"btcusdt@trade","data":{"e":"trade"}}',
        b"not json",
        b'{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":1700000000000',
    ],
)
def test_what_it_is_not_sure_of_goes_the_general_way(raw: bytes) -> None:
    assert binance_trade(raw, CTX, RECEIVED) is None
