"""Pure logic: backoff, configuration, URL classification."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.backoff import Backoff
from engine.config import Settings
from engine.errors import ConfigurationError
from engine.sources import detect_exchange, protocol_for


def test_backoff_grows_to_cap_with_full_jitter() -> None:
    backoff = Backoff(base=1.0, cap=8.0, rng=random.Random(7))
    ceilings = [1, 2, 4, 8, 8, 8]
    for ceiling in ceilings:
        delay = backoff.next_delay()
        assert 0 <= delay <= ceiling
    assert backoff.attempts == len(ceilings)


def test_backoff_resets_only_after_a_stable_period() -> None:
    backoff = Backoff(base=1.0, cap=8.0, reset_after=60.0)
    for _ in range(3):
        backoff.next_delay()
    backoff.succeeded(now=100.0)
    backoff.succeeded(now=159.0)
    assert backoff.attempts == 3
    backoff.succeeded(now=160.0)
    assert backoff.attempts == 0


def test_settings_defaults_use_embedded_database() -> None:
    settings = Settings.from_env({})
    assert settings.embedded
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.data_dir == Path(".sluice")


def test_settings_build_dsn_from_postgres_variables() -> None:
    settings = Settings.from_env(
        {"POSTGRES_HOST": "db.local", "POSTGRES_PASSWORD": "p@ss:word", "POSTGRES_DB": "etl"}
    )
    assert settings.postgres_dsn == "postgresql://postgres:p%40ss%3Aword@db.local:5432/etl"
    assert Settings.from_env({"POSTGRES_DSN": "postgresql:///x"}).postgres_dsn == "postgresql:///x"


def test_settings_read_server_options() -> None:
    settings = Settings.from_env(
        {
            "SLUICE_HOST": "::1",
            "SLUICE_PORT": "9000",
            "ALLOWED_ORIGINS": "http://a.test, http://b.test",
            "SLUICE_LOG_LEVEL": "debug",
            "SLUICE_WS_TRANSPORT": "trio-websocket",
            "SLUICE_BATCH_MAX_AGE_MS": "20",
        }
    )
    assert (settings.host, settings.port) == ("::1", 9000)
    assert settings.allowed_origins == ("http://a.test", "http://b.test")
    assert settings.log_level == "DEBUG"
    assert settings.ws_transport == "trio-websocket"
    assert settings.batch_max_age == 0.02


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SLUICE_PORT": "http"}, "SLUICE_PORT"),
        ({"SLUICE_PORT": "70000"}, "SLUICE_PORT"),
        ({"SLUICE_WS_TRANSPORT": "aiohttp"}, "SLUICE_WS_TRANSPORT"),
        ({"POSTGRES_HOST": "h", "POSTGRES_PORT": "x"}, "POSTGRES_PORT"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("url", "exchange", "protocol"),
    [
        ("wss://ws.okx.com:8443/ws/v5/public", "okx", "websocket"),
        ("wss://stream.binance.com:9443/ws/btcusdt@trade", "binance", "websocket"),
        ("wss://fstream.binancefuture.com/ws", "binance", "websocket"),
        ("wss://ws-feed.exchange.coinbase.com", "coinbase", "websocket"),
        ("wss://ws.kraken.com/v2", "kraken", "websocket"),
        ("https://api.bybit.com/v5/market/tickers", "bybit", "rest"),
        ("ws://127.0.0.1:9000/feed", "custom", "websocket"),
        ("ftp://okx.com/x", "okx", None),
    ],
)
def test_url_classification(url: str, exchange: str, protocol: str | None) -> None:
    assert detect_exchange(url) == exchange
    assert protocol_for(url) == protocol
