"""Realtime subscribers for load tests, run as their own process.

Opens ``--connections`` subscriptions to ``URL`` (Sluice's ``/api/realtime``) and counts
the records each receives, until each has ``EXPECTED`` records or ``--timeout`` passes.
Latency is firehose send time (``data.x``) → receipt, kept in a 0.1 ms histogram; with
``--parse``, also its first part, send → the engine's receive time (``received_at``).

Two ways to read a frame:

* ``--parse`` (the default with one connection): every frame is parsed and every record's
  latency is taken;
* otherwise, so that one process can keep up with a thousand subscribers, records are
  counted by their ``"type":"data_update"`` marker and a batch frame's latency is that of
  its *first* (oldest) record, counted for every record in the frame — never better than
  the truth.

Prints one JSON line: per-connection minimum and maximum received, the slowest connection's
rate, and latency percentiles over all connections.

Usage: ``python -m bench.subscriber URL EXPECTED [--connections N] [--parse]``; prints
``READY`` once every connection got its ``connected`` frame.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime

import attrs
import orjson
import trio

from engine.errors import SourceUnavailable
from engine.transport import SansIOTransport

RESOLUTION = 10_000  # histogram buckets per second (0.1 ms)
MARKER = b'"type":"data_update"'


@attrs.define
class Latencies:
    counts: dict[int, int] = attrs.field(factory=dict)
    total: int = 0

    def add(self, seconds: float, n: int = 1) -> None:
        bucket = max(0, int(seconds * RESOLUTION))
        self.counts[bucket] = self.counts.get(bucket, 0) + n
        self.total += n

    def percentile(self, q: float) -> float:
        """Milliseconds at quantile ``q`` (upper edge of its 0.1 ms bucket)."""
        if not self.total:
            return float("nan")
        rank = q * self.total
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return (bucket + 1) * 1000 / RESOLUTION
        return (max(self.counts) + 1) * 1000 / RESOLUTION


def first_stamp(frame: bytes) -> float | None:
    at = frame.find(b'"x":')
    if at < 0:
        return None
    end = at + 4
    while end < len(frame) and frame[end] in b"0123456789.eE+-":
        end += 1
    return float(frame[at + 4 : end])


@attrs.define
class Subscriber:
    url: str
    expected: int
    parse: bool
    compression: bool
    latencies: Latencies
    #: Parsed frames only: firehose send → the engine's receive time (``received_at``),
    #: the part of the latency spent before Sluice read the message.
    arrivals: Latencies
    received: int = 0
    first: float = 0.0
    last: float = 0.0
    closed: str | None = None  # why the server closed the subscription early

    async def run(self, ready: trio.Semaphore, done: trio.Event) -> None:
        transport = SansIOTransport(compression=self.compression)
        async with transport.connect(self.url, max_message_bytes=1 << 28, open_timeout=30) as ws:
            while not await ws.receive_messages():  # {"type": "connected"}
                pass
            ready.release()
            # Messages are handed to take() as they arrive, by the shared socket reader
            # (one task step reads every ready connection, as in the engine): a thousand
            # subscribers in four processes must not be what the measurement waits for.
            with trio.CancelScope() as done_receiving:
                if self.received >= self.expected:
                    done_receiving.cancel()

                def take(messages: list[bytes]) -> None:
                    now = time.time()
                    for message in messages:
                        self._count(message, now)
                    if not self.first:
                        self.first = now
                    self.last = now
                    if self.received >= self.expected:
                        done_receiving.cancel()

                try:
                    await ws.deliver(take)
                except SourceUnavailable as exc:  # e.g. dropped as lagged: counts stay
                    self.closed = str(exc)
        done.set()

    def _count(self, message: bytes, now: float) -> None:
        if self.parse:
            value = orjson.loads(message)
            kind = value.get("type")
            records = value["records"] if kind == "data_batch" else [value]
            for record in records:
                if record.get("type") == "data_update":
                    sent = record["data"]["x"]
                    self.latencies.add(now - sent)
                    received = datetime.fromisoformat(record["received_at"]).timestamp()
                    self.arrivals.add(received - sent)
                    self.received += 1
            return
        n = message.count(MARKER)
        if n:
            stamp = first_stamp(message)
            if stamp is not None:
                self.latencies.add(now - stamp, n)
            self.received += n


async def main(
    url: str,
    expected: int,
    connections: int,
    parse: bool,
    compression: bool,
    give_up_after: float,
) -> dict[str, object]:
    latencies, arrivals = Latencies(), Latencies()
    subscribers = [
        Subscriber(url, expected, parse, compression, latencies, arrivals)
        for _ in range(connections)
    ]
    ready = trio.Semaphore(0, max_value=connections)
    with trio.move_on_after(give_up_after):
        async with trio.open_nursery() as nursery:
            events = []
            for subscriber in subscribers:
                done = trio.Event()
                events.append(done)
                nursery.start_soon(subscriber.run, ready, done)
            for _ in range(connections):
                await ready.acquire()
            print("READY", flush=True)
            for done in events:
                await done.wait()
    # A rate over less than 10 ms (everything in one or two frames) would mean nothing.
    rates = [s.received / (s.last - s.first) for s in subscribers if s.last - s.first > 0.01]
    return {
        "connections": connections,
        "received_min": min(s.received for s in subscribers),
        "received_max": max(s.received for s in subscribers),
        "closed_early": sum(1 for s in subscribers if s.closed),
        "rate": min(rates, default=None),
        "p50_ms": latencies.percentile(0.50),
        "p90_ms": latencies.percentile(0.90),
        "p99_ms": latencies.percentile(0.99),
        "max_ms": latencies.percentile(1.0),
        "arrival_p50_ms": arrivals.percentile(0.50),
        "arrival_p99_ms": arrivals.percentile(0.99),
        "cpu_seconds": time.process_time(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.subscriber",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url")
    parser.add_argument("expected", type=int, help="records each connection should receive")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--parse", action="store_true", help="parse every frame")
    parser.add_argument(
        "--compression", action="store_true", help="offer permessage-deflate, as browsers do"
    )
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    result = trio.run(
        main,
        args.url,
        args.expected,
        args.connections,
        args.parse or args.connections == 1,
        args.compression,
        args.timeout,
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
