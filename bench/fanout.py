"""The fan-out ceiling: the least a process can do to send every record to every
subscriber over loopback, run as its own process.

It speaks just enough WebSocket for ``bench.subscriber`` (handshake, a ``connected``
frame, then ``data_batch`` frames), and sends records shaped and sized exactly like
Sluice's realtime records (``engine.hub.encode_event`` of the firehose's trades, each
stamped with its send time in ``data.x``). Every tick (100 a second) it builds one frame's
bytes once and hands the same bytes object to every connection; a connection that is
behind sends what piled up in one write. No database, no framework, no per-subscriber
copy in Python: what remains is the kernel moving the bytes, and the subscribers reading
them. What this costs is the floor under Sluice's ``subscribers-1000`` scenario.

Usage: ``python -m bench.fanout --connections N [--count C] [--rate R]``; prints
``PORT <n>``; starts sending half a second after the N-th subscriber connected; exits on
SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys

import attrs
import trio
from websockets.http11 import Request
from websockets.server import ServerProtocol

from engine.hub import batch_frame, encode_event
from engine.models import StoredRecord

from .firehose import firehose_records, frame

TICKS_PER_SECOND = 100


def records_json(first: int, n: int) -> list[str]:
    """``n`` realtime records as Sluice encodes them, stamped now."""
    records = firehose_records(first, n, "conn_0123456789abcdef")
    return [encode_event(StoredRecord(id=first + k, record=r)) for k, r in enumerate(records)]


@attrs.define(eq=False)
class Peer:
    stream: trio.SocketStream
    pending: list[bytes] = attrs.field(factory=list)
    wake: trio.Event = attrs.field(factory=trio.Event)

    async def send_loop(self) -> None:
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            chunks, self.pending = self.pending, []
            await self.stream.send_all(chunks[0] if len(chunks) == 1 else b"".join(chunks))


@attrs.define
class Fanout:
    connections: int
    count: int
    rate: float
    peers: list[Peer] = attrs.field(factory=list)
    all_connected: trio.Event = attrs.field(factory=trio.Event)

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            protocol = ServerProtocol(max_size=1 << 20)
            request = None
            while request is None:
                data = await stream.receive_some(65536)
                if not data:
                    return
                protocol.receive_data(data)
                request = next(
                    (e for e in protocol.events_received() if isinstance(e, Request)), None
                )
            protocol.send_response(protocol.accept(request))
            for out in protocol.data_to_send():
                await stream.send_all(out)
            await stream.send_all(frame(b'{"type":"connected"}'))
            peer = Peer(stream)
            self.peers.append(peer)
            if len(self.peers) == self.connections:
                self.all_connected.set()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(peer.send_loop)
                    while await stream.receive_some(65536):  # until the subscriber leaves
                        pass
                    nursery.cancel_scope.cancel()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                self.peers.remove(peer)

    async def broadcast(self) -> None:
        await self.all_connected.wait()
        await trio.sleep(0.5)
        per_tick = max(1, round(self.rate / TICKS_PER_SECOND))
        started = trio.current_time()
        sent = 0
        while sent < self.count:
            n = min(per_tick, self.count - sent)
            data = frame(batch_frame(records_json(sent, n)).encode())
            for peer in self.peers:
                peer.pending.append(data)
                peer.wake.set()
            sent += n
            await trio.sleep_until(started + sent / self.rate)


async def main(fanout: Fanout) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=4096)
    print(f"PORT {listeners[0].socket.getsockname()[1]}", flush=True)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, fanout.handle, listeners)
            nursery.start_soon(fanout.broadcast)
            async for _ in signals:
                nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--count", type=int, default=60_000, help="records to send to each")
    parser.add_argument("--rate", type=float, default=2_000, help="records/s")
    args = parser.parse_args()
    trio.run(main, Fanout(args.connections, args.count, args.rate))
    sys.exit(0)
