"""The broadcast hub actor: committed records out to realtime subscribers.

Each record is serialized once, whatever the number of subscribers: subscribers share the
same frame strings. Every subscriber has its own bounded queue, filled with
``send_nowait``: the hub never waits for a subscriber. The bound is ``max_lag`` records
(frames waiting, however they are batched). A subscriber past it is *lagged*: its queue is
closed, the subscription records why, and the web handler tells the client and
disconnects it.

Resource handling: :meth:`subscribe` is a plain context manager, so a subscription is
released even when the web framework cancels the handler. When the hub's input ends
(engine shutdown) it closes every subscriber queue with the reason ``shutdown``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import attrs
import orjson
import trio

from .models import StoredRecord

logger = logging.getLogger(__name__)

DEFAULT_MAX_LAG = 20_000
# The channel only holds references to shared batches; the record budget is the real bound.
QUEUE_BATCHES = 4096


def record_event(item: StoredRecord) -> dict[str, Any]:
    """The realtime ``data_update`` object for one committed record."""
    r = item.record
    return {
        "type": "data_update",
        "id": item.id,
        "connector_id": r.connector_id,
        "timestamp": r.timestamp,
        "received_at": r.received_at,
        "exchange": r.exchange,
        "instrument": r.instrument,
        "price": r.price,
        "size": r.size,
        "side": r.side,
        "message_type": r.message_type,
        "data": orjson.Fragment(r.data),
    }


def encode_event(item: StoredRecord) -> str:
    return orjson.dumps(record_event(item)).decode()


@attrs.define(eq=False)
class Subscription:
    """One subscriber's end: batches of encoded ``data_update`` frames (JSON text).

    Iterate it (``async for frames in subscription``) until the hub closes it;
    ``closed_reason`` then says why (``lagged`` or ``shutdown``).
    """

    _receive: trio.MemoryReceiveChannel[list[str]]
    _send: trio.MemorySendChannel[list[str]]
    closed_reason: str | None = None
    queued: int = 0

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> list[str]:
        try:
            batch = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None
        self.queued -= len(batch)
        return batch


@attrs.frozen
class HubStatistics:
    subscribers: int
    batches_in: int
    records_in: int
    frames_encoded: int
    lagged_disconnects: int


@attrs.define(eq=False)
class BroadcastHub:
    receive_channel: trio.MemoryReceiveChannel[list[StoredRecord]]
    max_lag: int = DEFAULT_MAX_LAG
    batches_in: int = 0
    records_in: int = 0
    frames_encoded: int = 0
    lagged_disconnects: int = 0
    _subscribers: set[Subscription] = attrs.field(factory=set)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        send, receive = trio.open_memory_channel[list[str]](QUEUE_BATCHES)
        sub = Subscription(receive, send)
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)
            send.close()
            receive.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for batch in self.receive_channel:
            self.publish(batch)
        for sub in list(self._subscribers):
            self._close(sub, "shutdown")

    def publish(self, batch: list[StoredRecord]) -> None:
        self.batches_in += 1
        self.records_in += len(batch)
        if not self._subscribers:
            return
        frames = [encode_event(item) for item in batch]
        self.frames_encoded += len(frames)
        for sub in list(self._subscribers):
            try:
                if sub.queued + len(frames) > self.max_lag:
                    raise trio.WouldBlock
                sub._send.send_nowait(frames)
                sub.queued += len(frames)
            except trio.WouldBlock:
                self.lagged_disconnects += 1
                logger.warning("realtime subscriber lagged behind; disconnecting it")
                self._close(sub, "lagged")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.discard(sub)

    def _close(self, sub: Subscription, reason: str) -> None:
        sub.closed_reason = reason
        self._subscribers.discard(sub)
        sub._send.close()

    def statistics(self) -> HubStatistics:
        return HubStatistics(
            subscribers=len(self._subscribers),
            batches_in=self.batches_in,
            records_in=self.records_in,
            frames_encoded=self.frames_encoded,
            lagged_disconnects=self.lagged_disconnects,
        )
