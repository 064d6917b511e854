"""A local WebSocket firehose for load tests, run as its own process.

Sends Binance-format trade events, each stamped with its send time (``"x"``, seconds as a
float), as fast as possible or paced at ``--rate`` messages per second, over every
connection it accepts. Frames are built in chunks with plain string formatting and a
hand-written frame header, so the firehose costs about a microsecond per message.

Usage: ``python -m bench.firehose --port 0 --count 100000 [--rate 10000]``; it prints
``PORT <n>`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time

import trio
from websockets.http11 import Request
from websockets.server import ServerProtocol

CHUNK = 200
TEMPLATE = (
    '{"e":"trade","E":%d,"s":"BTCUSDT","t":%d,"p":"42%03d.%02d","q":"0.00100000",'
    '"T":%d,"m":%s,"x":%.6f}'
)


def frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + struct.pack("!H", n) + payload
    return b"\x81\x7f" + struct.pack("!Q", n) + payload


def chunk(first: int, n: int) -> bytes:
    now = time.time()
    ms = int(now * 1000)
    return b"".join(
        frame(
            (TEMPLATE % (ms, i, i % 1000, i % 100, ms, "true" if i % 2 else "false", now)).encode()
        )
        for i in range(first, first + n)
    )


async def serve_connection(stream: trio.SocketStream, count: int, rate: float) -> None:
    protocol = ServerProtocol()
    async with stream:
        while True:  # handshake
            data = await stream.receive_some()
            if not data:
                return
            protocol.receive_data(data)
            events = protocol.events_received()
            if any(isinstance(e, Request) for e in events):
                request = next(e for e in events if isinstance(e, Request))
                protocol.send_response(protocol.accept(request))
                for out in protocol.data_to_send():
                    await stream.send_all(out)
                break
        started = trio.current_time()
        sent = 0
        try:
            while sent < count:
                n = min(CHUNK, count - sent)
                await stream.send_all(chunk(sent + 1, n))
                sent += n
                if rate > 0:
                    await trio.sleep_until(started + sent / rate)
            await trio.sleep_forever()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def main(port: int, count: int, rate: float) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    print(f"PORT {listeners[0].socket.getsockname()[1]}", flush=True)

    async def handler(stream: trio.SocketStream) -> None:
        await serve_connection(stream, count, rate)

    await trio.serve_listeners(handler, listeners)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s; 0 = max")
    args = parser.parse_args()
    try:
        trio.run(main, args.port, args.count, args.rate)
    except KeyboardInterrupt:
        sys.exit(0)
