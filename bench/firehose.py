"""A local market-data firehose for load tests, run as its own process.

One loopback port serves three things:

* ``ws://…/binance`` (or ``/``): Binance-format trade events, one per frame;
* ``ws://…/okx``: OKX ``trades`` messages, ``--okx-batch`` trades per message;
* ``ws://…/stream?streams=btcusdt@aggTrade``: Binance combined-stream ``aggTrade`` events
  (``{"stream", "data"}``), the shape cryptofeed's Binance feed consumes (its peer run);
* ``http://…/rest``: a JSON list of ``--rest-records`` trades per GET, for REST pollers.

Every trade carries its send time in ``"x"`` (epoch seconds, float) so a subscriber can
measure send → receive latency. Each WebSocket connection gets ``--count`` trades, as fast
as possible or paced at ``--rate`` trades per second (both can be overridden per connection
with ``?count=`` and ``?rate=`` in the URL), then stays open. Frames are built in chunks
with plain string formatting and a hand-written frame header, so the firehose costs about a
microsecond per trade. Pings are answered, so long runs keep their connections.

Usage: ``python -m bench.firehose [--port 0] [--count N] [--rate R]``; prints
``PORT <n>`` once listening, and on SIGINT/SIGTERM exits.
"""

from __future__ import annotations

import argparse
import signal
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from urllib.parse import parse_qs, urlsplit

import attrs
import orjson
import trio
from websockets.http11 import Request
from websockets.server import ServerProtocol

from engine.models import Record
from engine.normalize import decode, normalizer_for
from engine.normalize.common import Context

MAX_CHUNK = 200
BINANCE = (
    '{"e":"trade","E":%d,"s":"BTCUSDT","t":%d,"p":"42%03d.%02d","q":"0.00100000",'
    '"T":%d,"m":%s,"x":%.6f}'
)
BINANCE_AGG = (
    '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":%d,"s":"BTCUSDT","a":%d,'
    '"p":"42%03d.%02d","q":"0.00100000","f":%d,"l":%d,"T":%d,"m":%s,"M":true,"x":%.6f}}'
)
OKX_HEAD = '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":['
OKX_TRADE = (
    '{"instId":"BTC-USDT","tradeId":"%d","px":"42%03d.%02d","sz":"0.001","side":"%s",'
    '"ts":"%d","x":%.6f}'
)


def frame(payload: bytes) -> bytes:
    """One unmasked server-to-client text frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + struct.pack("!H", n) + payload
    return b"\x81\x7f" + struct.pack("!Q", n) + payload


def binance_trade(i: int, ms: int, now: float) -> str:
    """Trade number ``i`` as a Binance ``trade`` event, sent at ``now`` (``ms`` in ms)."""
    return BINANCE % (ms, i, i % 1000, i % 100, ms, "true" if i % 2 else "false", now)


def binance_chunk(first: int, n: int) -> bytes:
    now = time.time()
    ms = int(now * 1000)
    return b"".join(frame(binance_trade(i, ms, now).encode()) for i in range(first, first + n))


def binance_agg_chunk(first: int, n: int) -> bytes:
    """Trades as combined-stream aggTrade events (one trade per aggregate)."""
    now = time.time()
    ms = int(now * 1000)
    return b"".join(
        frame(
            (
                BINANCE_AGG
                % (ms, i, i % 1000, i % 100, i, i, ms, "true" if i % 2 else "false", now)
            ).encode()
        )
        for i in range(first, first + n)
    )


def firehose_records(first: int, n: int, connector_id: str = "conn_bench") -> list[Record]:
    """The records trades ``first`` … ``first + n - 1`` normalize to, stamped now, built
    without a network (for the store and fan-out baselines)."""
    ctx = Context(connector_id, "binance")
    normalize = normalizer_for("binance")
    now = time.time()
    ms = int(now * 1000)
    received = datetime.now(UTC)
    records: list[Record] = []
    for i in range(first, first + n):
        result = normalize(*decode(binance_trade(i, ms, now).encode()), ctx, received)
        assert isinstance(result, list)
        records += result
    return records


def okx_chunk(first: int, n: int, *, per_message: int) -> bytes:
    now = time.time()
    ms = int(now * 1000)
    frames = []
    for start in range(first, first + n, per_message):
        trades = ",".join(
            OKX_TRADE % (i, i % 1000, i % 100, "buy" if i % 2 else "sell", ms, now)
            for i in range(start, min(start + per_message, first + n))
        )
        frames.append(frame((OKX_HEAD + trades + "]}").encode()))
    return b"".join(frames)


def rest_body(first: int, n: int) -> bytes:
    now = time.time()
    return orjson.dumps(
        [
            {
                "symbol": "BTCUSDT",
                "id": i,
                "price": f"42{i % 1000:03d}.{i % 100:02d}",
                "qty": "0.001",
                "timestamp": int(now * 1000),
                "x": now,
            }
            for i in range(first, first + n)
        ]
    )


@attrs.define
class Firehose:
    count: int
    rate: float
    okx_batch: int = 10
    rest_records: int = 1
    connections: int = 0
    rest_requests: int = 0
    _rest_next: int = 1

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                data = await _receive(stream)
                if not data or len(head) > 65536:
                    return
                head += data
            if b"upgrade: websocket" in head.lower():
                await self._websocket(stream, head)
            else:
                await self._rest(stream, head)

    async def _websocket(self, stream: trio.SocketStream, head: bytes) -> None:
        protocol = ServerProtocol(max_size=1 << 20)
        protocol.receive_data(head)
        request = next((e for e in protocol.events_received() if isinstance(e, Request)), None)
        if request is None:
            return
        protocol.send_response(protocol.accept(request))
        lock = trio.Lock()

        async def flush() -> None:
            async with lock:
                for out in protocol.data_to_send():
                    if out:
                        await stream.send_all(out)

        await flush()
        url = urlsplit(request.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        count = int(query.get("count", self.count))
        rate = float(query.get("rate", self.rate))
        path = url.path.rstrip("/")
        chunk = (
            partial(okx_chunk, per_message=self.okx_batch)
            if path.endswith("okx")
            else binance_agg_chunk
            if path.endswith("/stream")
            else binance_chunk
        )
        self.connections += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._answer, stream, protocol, flush, nursery.cancel_scope)
                await self._send(stream, lock, count, rate, chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def _answer(
        self,
        stream: trio.SocketStream,
        protocol: ServerProtocol,
        flush: Callable[[], Awaitable[None]],
        done: trio.CancelScope,
    ) -> None:
        """Read what the client sends: pings get pongs, a close ends the connection."""
        while data := await _receive(stream):
            protocol.receive_data(data)
            protocol.events_received()
            await flush()
        done.cancel()

    async def _send(
        self,
        stream: trio.SocketStream,
        lock: trio.Lock,
        count: int,
        rate: float,
        chunk: Callable[[int, int], bytes],
    ) -> None:
        # Paced: about 100 sends a second per connection, so pacing stays smooth.
        size = MAX_CHUNK if rate <= 0 else max(1, min(MAX_CHUNK, int(rate / 100)))
        started = trio.current_time()
        sent = 0
        while sent < count:
            n = min(size, count - sent)
            data = chunk(sent + 1, n)
            async with lock:
                await stream.send_all(data)
            sent += n
            if rate > 0:
                await trio.sleep_until(started + sent / rate)
        await trio.sleep_forever()

    async def _rest(self, stream: trio.SocketStream, head: bytes) -> None:
        """Minimal HTTP/1.1 with keep-alive: every request gets the next trades."""
        while True:
            end = head.index(b"\r\n\r\n") + 4
            head = head[end:]
            body = rest_body(self._rest_next, self.rest_records)
            self._rest_next += self.rest_records
            self.rest_requests += 1
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            while b"\r\n\r\n" not in head:
                data = await _receive(stream)
                if not data:
                    return
                head += data


async def _receive(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some(65536)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""


async def main(firehose: Firehose, port: int) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1", backlog=4096)
    print(f"PORT {listeners[0].socket.getsockname()[1]}", flush=True)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, firehose.handle, listeners)
            async for _ in signals:
                nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.firehose",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=100_000, help="trades per connection")
    parser.add_argument("--rate", type=float, default=0.0, help="trades/s per connection; 0 = max")
    parser.add_argument("--okx-batch", type=int, default=10, help="trades per OKX message")
    parser.add_argument("--rest-records", type=int, default=1, help="trades per REST response")
    args = parser.parse_args()
    trio.run(main, Firehose(args.count, args.rate, args.okx_batch, args.rest_records), args.port)
    sys.exit(0)
