"""A local fake exchange for tests: a trio-websocket server on loopback that speaks a
little Binance and OKX.

``/binance``: sends ``count`` raw trade events (trade ids ``start``…), then keeps the
connection open. ``/okx``: waits for a subscribe message, answers with the OKX ack, then
sends trades in messages of ``per_message`` trades each; ``/okx-refuse`` answers it with
OKX's error for an instrument that does not exist. Every connection is recorded
with the messages the client sent.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import attrs
import orjson
import trio
import trio_websocket


def binance_trade(trade_id: int, symbol: str = "BTCUSDT") -> bytes:
    return orjson.dumps(
        {
            "e": "trade",
            "E": 1700000000000 + trade_id,
            "s": symbol,
            "t": trade_id,
            "p": f"{40000 + trade_id % 1000}.{trade_id % 100:02d}",
            "q": "0.00100000",
            "T": 1700000000000 + trade_id,
            "m": trade_id % 2 == 0,
            "M": True,
        }
    )


def okx_trades(first_id: int, n: int, inst: str = "BTC-USDT") -> bytes:
    data = [
        {
            "instId": inst,
            "tradeId": str(first_id + i),
            "px": f"{42000 + (first_id + i) % 500}.5",
            "sz": "0.01",
            "side": "buy" if (first_id + i) % 3 else "sell",
            "ts": str(1700000000000 + first_id + i),
            "count": "1",
        }
        for i in range(n)
    ]
    return orjson.dumps({"arg": {"channel": "trades", "instId": inst}, "data": data})


@attrs.define
class FakeExchange:
    port: int = 0
    connections: int = 0
    received: list[str] = attrs.field(factory=list)
    #: ``/lossy``: the next trade id, and the ids that happened while nobody was connected.
    next_id: int = 1
    missed: list[int] = attrs.field(factory=list)
    sent: list[int] = attrs.field(factory=list)
    #: Each connection's request path (with query) and headers, as received.
    requests: list[tuple[str, dict[str, str]]] = attrs.field(factory=list)

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def run(
        self, *, task_status: trio.TaskStatus[FakeExchange] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, self._handle, "127.0.0.1", 0, None
            )
            self.port = server.port
            task_status.started(self)

    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        self.requests.append((request.path, headers))
        ws = await request.accept()
        self.connections += 1
        parts = urlsplit(request.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        count = int(query.get("count", "100"))
        start = int(query.get("start", "1"))
        try:
            if parts.path == "/binance":
                for trade_id in range(start, start + count):
                    await ws.send_message(binance_trade(trade_id).decode())
            elif parts.path == "/okx":
                subscribe = await ws.get_message()
                self.received.append(str(subscribe))
                request_arg = orjson.loads(subscribe)["args"][0]
                await ws.send_message(
                    orjson.dumps(
                        {"event": "subscribe", "arg": request_arg, "connId": "x1"}
                    ).decode()
                )
                per = int(query.get("per_message", "5"))
                for first in range(start, start + count, per):
                    n = min(per, start + count - first)
                    await ws.send_message(okx_trades(first, n).decode())
            elif parts.path == "/okx-refuse":
                # OKX's answer to a subscription it cannot serve; the socket stays open.
                self.received.append(str(await ws.get_message()))
                await ws.send_message(
                    '{"event":"error","code":"60018","msg":"Wrong URL or channel:trades,'
                    'instId:NOPE-USDT doesn\'t exist.","connId":"x1"}'
                )
            elif parts.path == "/poison":
                # Valid trades 1..count with poison after every 10th: each kind once per round.
                poisons = [
                    "not json at all",
                    '{"e":"trade","s":"BTCUSDT","t":-1,"p":"NaN","q":"1","T":1}',
                    '{"e":"trade","s":"BTCUSDT","t":-2,"p":"1e999999","q":"1","T":1}',
                    '{"e":"trade","s":"BTC\\u0000USDT","t":-3,"p":"1","q":"1","T":1}',
                    '{"e":"trade","s":"BTCUSDT","t":-4,"p":"1","q":"1","T":1,"x":"\\ud800"}',
                    b"\x00\x01binary frame",
                ]
                for trade_id in range(start, start + count):
                    await ws.send_message(binance_trade(trade_id).decode())
                    if trade_id % 10 == 0:
                        await ws.send_message(poisons[(trade_id // 10) % len(poisons)])
            elif parts.path == "/paced":
                # `count` Binance trades at `rate` per second, in 10 ms bursts.
                rate = int(query.get("rate", "1000"))
                per_tick = max(1, rate // 100)
                next_at = trio.current_time()
                for first in range(start, start + count, per_tick):
                    for trade_id in range(first, min(first + per_tick, start + count)):
                        await ws.send_message(binance_trade(trade_id).decode())
                    next_at += 0.01
                    await trio.sleep_until(next_at)
            elif parts.path == "/lossy":
                # Like a real exchange: trades go on while the client is away. Each
                # connection gets `per_conn` trades, then is closed; `lost` trades happen
                # before the client is back. After `total` ids the feed stays open.
                per_conn, lost = int(query["per_conn"]), int(query["lost"])
                total = int(query["total"])
                if self.connections > 1 and self.next_id <= total:
                    self.missed.extend(range(self.next_id, self.next_id + lost))
                    self.next_id += lost
                end = min(self.next_id + per_conn, total + 1)
                for trade_id in range(self.next_id, end):
                    await ws.send_message(binance_trade(trade_id).decode())
                    self.sent.append(trade_id)
                self.next_id = end
                if end <= total:
                    await ws.aclose()
                    return
            elif parts.path == "/close-after":
                # Sends `count` Binance trades then closes: the client must reconnect.
                message = await ws.get_message()
                self.received.append(str(message))
                for trade_id in range(start, start + count):
                    await ws.send_message(binance_trade(trade_id).decode())
                await ws.aclose()
                return
            await trio.sleep_forever()
        except trio_websocket.ConnectionClosed:
            pass
