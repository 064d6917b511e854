"""The peer baseline: cryptofeed (pinned in the ``bench`` extra) consuming the local firehose
into its own PostgreSQL backend, offline, run as its own process by the bench.

What it takes to run cryptofeed 2.4.1 without the internet, each the smallest change that
works, none touching how it parses, queues or stores:

* its symbol registry is filled from a local ``exchangeInfo`` (``EXCHANGE_INFO``, the
  fields of Binance's answer that ``Binance._parse_symbol_data`` reads) instead of the REST
  call it makes at start;
* its WebSocket connection refuses any address but ``wss://``: a loopback ``ws://``
  address is let through (``WSAsyncConn.__init__`` sees the ``wss://`` spelling, then the
  real address is put back);
* Binance's endpoint list points at the firehose, which serves the combined-stream
  ``aggTrade`` messages cryptofeed's ``TRADES`` channel subscribes to
  (``/stream?streams=btcusdt@aggTrade``).

Its PostgreSQL backend (``TradePostgres``, asyncpg, one multi-row ``INSERT`` per batch of
whatever its unbounded queue holds) writes the ``trades`` table of cryptofeed's example
schema (``TRADES_TABLE``).

Usage: ``python -m bench.cryptofeed_peer PORT DSN``; prints ``READY`` once its feed is
added, then runs until killed. :func:`cryptofeed_baseline` runs it against a firehose
process and measures it, for the bench.

How the two pipelines' work differs (so the ratio is read right): cryptofeed parses each
message into a Python ``Trade`` object and stores six columns of it (no raw payload),
with no deduplication (a duplicate key fails its whole batch, which it then drops),
no realtime delivery, an unbounded queue between feed and writer, and ``INSERT`` text
built by string formatting; Sluice also stores the raw message as ``jsonb`` with its
idempotency key and indexes, and publishes every committed record to a realtime
subscriber in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

import psycopg

TRADES_TABLE = """
CREATE TABLE IF NOT EXISTS trades (
    id serial PRIMARY KEY,
    timestamp timestamptz,
    receipt_timestamp timestamptz,
    exchange varchar(32),
    symbol varchar(32),
    side varchar(8),
    amount numeric(64, 32),
    price numeric(64, 32),
    trade_id varchar(64),
    order_type varchar(32)
)
"""

EXCHANGE_INFO = {
    "symbols": [
        {
            "symbol": "BTCUSDT",
            "status": "TRADING",
            "baseAsset": "BTC",
            "quoteAsset": "USDT",
            "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.01000000"}],
        }
    ]
}


def cryptofeed_baseline(dsn: str, count: int) -> dict[str, float]:
    """cryptofeed storing ``count`` firehose trades at full speed into ``dsn``: messages/s
    (from its start to the last row committed) and µs of CPU per message of its process
    and of PostgreSQL."""
    import psutil

    from .runner import CpuMeter, postgres_processes, process

    with (
        process(["-m", "bench.firehose", "--count", str(count)], ready="PORT") as (_, line),
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        port = line.split()[1]
        with process(["-m", "bench.cryptofeed_peer", port, dsn], ready="READY") as (peer, _):
            cpu = CpuMeter({"peer": lambda: [psutil.Process(peer.pid)], "pg": postgres_processes})
            started = time.perf_counter()
            stored = 0
            while stored < count and time.perf_counter() - started < 300:
                time.sleep(0.05)
                with contextlib.suppress(psycopg.errors.UndefinedTable):
                    row = conn.execute("SELECT count(*) FROM trades").fetchone()
                    stored = int(row[0]) if row else 0
            elapsed = time.perf_counter() - started
            used = cpu.used()
    return {
        "msgs": stored / elapsed,
        "stored": stored,
        "count": count,
        "us": 1e6 * used["peer"] / max(stored, 1),
        "pg_us": 1e6 * used["pg"] / max(stored, 1),
    }


def main(port: int, dsn: str) -> None:
    from cryptofeed import FeedHandler
    from cryptofeed.backends.postgres import TradePostgres
    from cryptofeed.connection import WebsocketEndpoint, WSAsyncConn
    from cryptofeed.defines import TRADES
    from cryptofeed.exchanges import Binance
    from cryptofeed.symbols import Symbols

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TRADES_TABLE)
    info = psycopg.conninfo.conninfo_to_dict(dsn)

    symbols, details = Binance._parse_symbol_data(EXCHANGE_INFO)
    Symbols.set(Binance.id, symbols, details)
    Binance.websocket_endpoints = [WebsocketEndpoint(f"ws://127.0.0.1:{port}")]
    checked_init = WSAsyncConn.__init__

    def loopback_init(self: Any, address: str, *args: Any, **kwargs: Any) -> None:
        loopback = address.startswith("ws://127.0.0.1:")
        checked_init(self, "wss://" + address[5:] if loopback else address, *args, **kwargs)
        self.address = address

    WSAsyncConn.__init__ = loopback_init  # type: ignore[method-assign]

    handler = FeedHandler(config={"log": {"disabled": True}, "uvloop": True})
    backend = TradePostgres(
        host=str(info.get("host") or "127.0.0.1"),
        port=int(info.get("port") or 5432),
        user=str(info.get("user") or "postgres"),
        pw=info.get("password"),
        db=str(info["dbname"]),
    )
    handler.add_feed(Binance(symbols=["BTC-USDT"], channels=[TRADES], callbacks={TRADES: backend}))
    # cryptofeed asks asyncio for "the current loop", which Python 3.11 with uvloop's policy
    # no longer makes up: give it one.
    asyncio.set_event_loop(asyncio.new_event_loop())
    print("READY", flush=True)
    handler.run()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
