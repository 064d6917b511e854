"""A realtime subscriber for load tests, run as its own process: counts records and
measures the latency from the firehose's send stamp (``data.x``) to receipt.

Usage: ``python -m bench.subscriber URL EXPECTED [--batch]``; prints one JSON line when
it has received EXPECTED records (or on timeout).
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson
import trio
import trio_websocket


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(url: str, expected: int, give_up_after: float) -> dict[str, object]:
    latencies: list[float] = []
    first = last = 0.0
    with trio.move_on_after(give_up_after):
        async with trio_websocket.open_websocket_url(url, message_queue_size=1024) as ws:
            await ws.get_message()  # connected
            print("READY", flush=True)
            while len(latencies) < expected:
                message = orjson.loads(await ws.get_message())
                now = time.time()
                records = message["records"] if message["type"] == "data_batch" else [message]
                for record in records:
                    if record.get("type", "data_update") == "data_update":
                        latencies.append(now - record["data"]["x"])
                if not first:
                    first = now
                last = now
    span = max(last - first, 1e-9)
    return {
        "received": len(latencies),
        "rate": len(latencies) / span,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p90_ms": percentile(latencies, 0.90) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies, default=float("nan")) * 1000,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("expected", type=int)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    result = trio.run(main, args.url, args.expected, args.timeout)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
