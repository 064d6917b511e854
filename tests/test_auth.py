"""Request signing against the exchanges' documented examples and independent HMACs."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

from engine.auth import Credentials, check_options, missing_secrets, sign

NOW = datetime(2017, 7, 12, 2, 41, 59, 559000, tzinfo=UTC)  # 1499827319559 ms


def test_binance_signature_matches_the_documented_example() -> None:
    # Binance spot API docs, "SIGNED Endpoint Examples for POST /api/v3/order".
    creds = Credentials(
        api_key="vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
        api_secret="NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
    )
    params = {
        "symbol": "LTCBTC",
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "1",
        "price": "0.1",
        "recvWindow": "5000",
    }
    request = sign(
        "POST",
        "https://api.binance.com/api/v3/order",
        params,
        {},
        None,
        "HMAC",
        {"preset": "binance"},
        creds,
        NOW,
    )
    query = dict(parse_qsl(urlsplit(request.url).query))
    assert query["timestamp"] == "1499827319559"
    assert query["signature"] == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    assert request.headers["X-MBX-APIKEY"] == creds.api_key
    assert urlsplit(request.url).query.endswith(
        "recvWindow=5000&timestamp=1499827319559"
        "&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    )


def test_okx_signature_is_base64_hmac_of_timestamp_method_path_body() -> None:
    creds = Credentials(
        api_key="key-1", api_secret="22582BD0CFF14C41EDBF1AB98506286D", passphrase="pass"
    )
    request = sign(
        "GET",
        "https://www.okx.com/api/v5/account/balance",
        {"ccy": "BTC"},
        {},
        None,
        "HMAC",
        {"preset": "okx"},
        creds,
        datetime(2020, 12, 8, 9, 8, 57, 715000, tzinfo=UTC),
    )
    prehash = b"2020-12-08T09:08:57.715ZGET/api/v5/account/balance?ccy=BTC"
    expected = base64.b64encode(
        hmac.new(b"22582BD0CFF14C41EDBF1AB98506286D", prehash, hashlib.sha256).digest()
    ).decode()
    assert request.headers["OK-ACCESS-SIGN"] == expected
    assert request.headers["OK-ACCESS-TIMESTAMP"] == "2020-12-08T09:08:57.715Z"
    assert request.headers["OK-ACCESS-KEY"] == "key-1"
    assert request.headers["OK-ACCESS-PASSPHRASE"] == "pass"
    assert request.url == "https://www.okx.com/api/v5/account/balance?ccy=BTC"


def test_generic_hmac_and_simple_schemes() -> None:
    creds = Credentials(api_key="k", api_secret="s", bearer_token="t", username="u", password="p")
    request = sign(
        "POST",
        "https://api.example.com/v1/x",
        {"a": "1"},
        {},
        b'{"q":1}',
        "HMAC",
        {
            "preset": "generic",
            "sign": ["timestamp", "method", "path", "body"],
            "encoding": "base64",
            "signature_header": "X-Sig",
        },
        creds,
        NOW,
    )
    expected = base64.b64encode(
        hmac.new(b"s", b'1499827319559POST/v1/x{"q":1}', hashlib.sha256).digest()
    ).decode()
    assert request.headers["X-Sig"] == expected
    assert request.headers["X-Timestamp"] == "1499827319559"
    bearer = sign("GET", "https://h/x", {}, {}, None, "BEARER", {}, creds, NOW)
    assert bearer.headers["Authorization"] == "Bearer t"
    basic = sign("GET", "https://h/x", {}, {}, None, "BASIC", {}, creds, NOW)
    assert basic.headers["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    key_q = sign(
        "GET",
        "https://h/x?z=9",
        {},
        {},
        None,
        "API_KEY",
        {"in": "query", "param": "key"},
        creds,
        NOW,
    )
    assert key_q.url == "https://h/x?z=9&key=k"
    key_h = sign("GET", "https://h/x", {}, {}, None, "API_KEY", {}, creds, NOW)
    assert key_h.headers["X-API-Key"] == "k"


def test_option_and_credential_checks() -> None:
    assert check_options("HMAC", {"preset": "kraken"}) is not None
    assert check_options("HMAC", {"colour": 1}) is not None
    assert check_options("HMAC", {"preset": "okx"}) is None
    assert missing_secrets("HMAC", {"preset": "okx"}, Credentials(api_key="k")) == [
        "api_secret",
        "passphrase",
    ]
    assert missing_secrets("None", {}, Credentials()) == []
