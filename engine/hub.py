"""The broadcast hub actor: committed records out to realtime subscribers.

Each record is serialized once, whatever the number of subscribers. Every subscriber has
its own small bounded queue, filled with ``send_nowait``: the hub never waits for a
subscriber. One whose queue is full is *lagged*: its queue is closed, the subscription
records why, and the web handler tells the client and disconnects it.

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

DEFAULT_QUEUE_BATCHES = 64


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
    """One subscriber's end: batches of encoded ``data_update`` frames (JSON text)."""

    receive_channel: trio.MemoryReceiveChannel[list[str]]
    _send: trio.MemorySendChannel[list[str]]
    closed_reason: str | None = None
    delivered: int = 0


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
    queue_batches: int = DEFAULT_QUEUE_BATCHES
    batches_in: int = 0
    records_in: int = 0
    frames_encoded: int = 0
    lagged_disconnects: int = 0
    _subscribers: set[Subscription] = attrs.field(factory=set)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        send, receive = trio.open_memory_channel[list[str]](self.queue_batches)
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
                sub._send.send_nowait(frames)
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
