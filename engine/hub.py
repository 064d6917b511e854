"""The broadcast hub actor: committed records (and notices such as gaps) out to realtime
subscribers.

Each record is serialized once, whatever the number of subscribers: subscribers share the
same frame strings. Every subscriber has its own bounded queue, filled with
``send_nowait``: the hub never waits for a subscriber. The bound is ``max_lag`` records
waiting, however they are batched: a subscriber that still has that many queued when the
next commit is published is *lagged*: its queue is closed, the subscription records why,
and the web handler tells the client and disconnects it. A subscriber that has kept up
takes the next commit whatever its size, so a queue holds at most ``max_lag`` records plus
one publish.

Each publish costs one frame write per subscriber, so with many subscribers the hub
publishes at most once per *linger* (50 µs per subscriber, at most 50 ms; no wait for a
single subscriber), what committed meanwhile together, in shared frames of at most
``FRAME_RECORDS``. The linger counts from the start of the last publish, not from the
next commit: a fan-out that took longer than the linger is followed by the next publish
at once.

A subscriber may narrow what it receives with a :class:`Filter` (connector, exchange,
instrument, message types); notices carry a connector id and a type too.

Resource handling: :meth:`subscribe` is a plain context manager, so a subscription is
released even when the web framework cancels the handler. When every sender of the hub's
input has closed (engine shutdown) the hub closes all subscriber queues with the reason
``shutdown``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import attrs
import orjson
import trio

from .errors import Unavailable
from .memo import per_batch
from .metrics import Histogram
from .models import Record, StoredRecord

logger = logging.getLogger(__name__)

DEFAULT_MAX_LAG = 20_000
DEFAULT_MAX_SUBSCRIBERS = 1_000
# The channel only holds references to shared batches; the frame budget is the real bound.
QUEUE_BATCHES = 4096
# With many subscribers, every publish costs one frame write per subscriber: the hub
# publishes at most once per linger, what committed meanwhile as one batch. The linger
# grows with the subscriber count (none to speak of for a few; 50 ms for a thousand) so
# the frames written per second stay about the same however many subscribers there are.
#
# It counts from the start of the last publish. Counted from the first commit after a
# publish (until 2026-12-06), it came on top of the fan-out: with 1,000 subscribers a
# publish took ≈ 45 ms of writes, then 50 ms more of gathering, so one every ≈ 100 ms;
# bigger batches made longer fan-outs and the cycle could run away (440 records a
# publish, 146 ms to write them, one run in four). bench subscribers-1000, two
# alternating pairs (p50 / p99 ms): 68 / 169 and 69 / 141 counted from the last publish,
# 395 / 584 and 131 / 298 before; the engine's CPU the same (0.49-0.50 cores, 0.44-0.48).
LINGER_PER_SUBSCRIBER = 50e-6
MAX_LINGER = 0.05
# At most this many records per published batch (so per batch frame, ≈ 250 KB for trades,
# within clients' usual 1 MiB message limit) however big the writer's batches are or how
# many the hub gathers.
FRAME_RECORDS = 500
CATCH_UP_RECORDS = 500  # a catch-up frame takes queued batches until about this many
# A queued batch this big goes to a subscriber that is behind as its own frame, whose text
# every subscriber shares (and the server frames once), rather than copied into a frame of
# its own: a thousand subscribers each building its own catch-up frames cost so much that
# they fell further behind (measured: p99 0.7 s → 2 to 5 s, RSS 130 MiB → 1.1 GiB).
SHARED_RECORDS = 100


@attrs.frozen
class Notice:
    """A non-record event for subscribers (``{"type": "gap", ...}``, a test message)."""

    connector_id: str | None
    payload: dict[str, Any]


HubItem = list[StoredRecord] | Notice


class TooManySubscribers(Unavailable):
    """The realtime subscriber cap is reached."""


@attrs.frozen
class Filter:
    """What a subscriber wants; ``None`` (or empty) means everything."""

    connector_id: str | None = None
    exchange: str | None = None
    instrument: str | None = None
    types: frozenset[str] | None = None

    @property
    def everything(self) -> bool:
        return self == EVERYTHING

    def accepts(self, item: StoredRecord) -> bool:
        r = item.record
        return (
            (self.connector_id is None or r.connector_id == self.connector_id)
            and (self.exchange is None or r.exchange == self.exchange)
            and (self.instrument is None or r.instrument == self.instrument)
            and (self.types is None or r.message_type in self.types)
        )

    def accepts_notice(self, notice: Notice) -> bool:
        kind = notice.payload.get("type")
        return (
            self.connector_id is None
            or notice.connector_id is None
            or notice.connector_id == self.connector_id
        ) and (self.types is None or kind in self.types or kind == "test")


EVERYTHING = Filter()


def _number(text: str | None) -> orjson.Fragment | None:
    # Decimal text from the normalizers is valid JSON number text: the source's own digits
    # go out as a JSON number, never through a float.
    return None if text is None else orjson.Fragment(text)


def record_event(item: StoredRecord, *, strings: bool = False) -> dict[str, Any]:
    """The realtime ``data_update`` object for one committed record, in the original
    service's shape. Prices and sizes are JSON numbers written with the source's digits,
    or, with ``strings``, JSON strings holding them."""
    r = item.record
    num = _identity if strings else _number
    event = {
        "type": "data_update",
        "id": item.id,
        "source_id": r.source_id,
        "session_id": r.session_id,
        "connector_id": r.connector_id,
        "timestamp": r.timestamp,
        "received_at": r.received_at,
        "exchange": r.exchange,
        "instrument": r.instrument,
        "price": num(r.price),
        "size": num(r.size),
        "side": r.side,
        "message_type": r.message_type,
        "bid_price": num(r.bid_price),
        "bid_size": num(r.bid_size),
        "ask_price": num(r.ask_price),
        "ask_size": num(r.ask_size),
        "data": orjson.Fragment(r.data),
    }
    if r.source == "rest":
        event["status_code"] = r.status_code
        event["response_time_ms"] = r.response_time_ms
    return event


def _identity(text: str | None) -> str | None:
    return text


def encode_event(item: StoredRecord, *, strings: bool = False) -> str:
    return orjson.dumps(record_event(item, strings=strings)).decode()


def _json_text(value: str | None) -> str:
    return orjson.dumps(value).decode()


def _json_time(value: datetime) -> str:
    return orjson.dumps(value).decode()


def encode_events(items: list[StoredRecord], *, strings: bool = False) -> list[str]:
    """``[encode_event(item) for item in items]``, the same text for less CPU.

    One batch's records mostly come from one connector run and instrument, so the parts of
    the frame they share (session, connector, exchange, instrument, type, best bid/ask)
    are encoded once per change, not once per record, and each frame is one f-string of
    what differs; prices are already JSON number text. REST records (their response time
    is a float, whose text orjson decides) take :func:`encode_event`.
    ``tests/test_hub.py`` holds the two to the same bytes.
    """
    text = per_batch(_json_text)
    time_text = per_batch(_json_time)

    def number(value: str | None) -> str:
        if value is None:
            return "null"
        return '"' + value + '"' if strings else value

    out: list[str] = []
    last: Record | None = None
    run = inst = tail = ""
    for item in items:
        r = item.record
        if r.source != "websocket":
            out.append(encode_event(item, strings=strings))
            continue
        if last is None or r.session_id != last.session_id or r.connector_id != last.connector_id:
            run = f'"session_id":{text(r.session_id)},"connector_id":{text(r.connector_id)},'
        if last is None or r.exchange != last.exchange or r.instrument != last.instrument:
            inst = f'"exchange":{text(r.exchange)},"instrument":{text(r.instrument)},'
        if (
            last is None
            or r.message_type != last.message_type
            or r.bid_price != last.bid_price
            or r.bid_size != last.bid_size
            or r.ask_price != last.ask_price
            or r.ask_size != last.ask_size
        ):
            tail = (
                f'"message_type":{text(r.message_type)},"bid_price":{number(r.bid_price)},'
                f'"bid_size":{number(r.bid_size)},"ask_price":{number(r.ask_price)},'
                f'"ask_size":{number(r.ask_size)},'
            )
        last = r
        source_id = r.source_id
        out.append(
            f'{{"type":"data_update","id":{item.id},"source_id":'
            + (
                f'"{source_id}"'
                if source_id is not None and source_id.isascii() and source_id.isalnum()
                else orjson.dumps(source_id).decode()
            )
            + f',{run}"timestamp":{time_text(r.timestamp)},'
            f'"received_at":{time_text(r.received_at)},{inst}'
            f'"price":{number(r.price)},"size":{number(r.size)},"side":{text(r.side)},'
            f'{tail}"data":{r.data.decode()}}}'
        )
    return out


class Frames(list[str]):
    """Encoded frames handed to subscribers. Every subscriber with the same filter gets the
    same object, so its batch-mode frame text is built once for all of them."""

    __slots__ = ("_batch_text", "ids")

    #: The database ids of the records, frame by frame (empty for notices): a resuming
    #: subscriber skips the ones it already got from the database.
    ids: list[int]

    def batch_text(self) -> str:
        try:
            return self._batch_text
        except AttributeError:
            self._batch_text: str = batch_frame(self)
            return self._batch_text


def catch_up(batches: list[Frames]) -> list[str]:
    """Frame texts, in order, for a batch-mode subscriber with ``batches`` queued: a batch
    of ``SHARED_RECORDS`` or more is sent as its own shared frame; runs of smaller ones are
    joined into frames of about ``CATCH_UP_RECORDS``."""
    texts: list[str] = []
    run: list[Frames] = []
    size = 0

    def flush() -> None:
        nonlocal size
        if len(run) == 1:
            texts.append(run[0].batch_text())
        elif run:
            texts.append(batch_frame([frame for batch in run for frame in batch]))
        run.clear()
        size = 0

    for batch in batches:
        if len(batch) >= SHARED_RECORDS:
            flush()
            texts.append(batch.batch_text())
            continue
        run.append(batch)
        size += len(batch)
        if size >= CATCH_UP_RECORDS:
            flush()
    flush()
    return texts


def batch_frame(frames: list[str]) -> str:
    """One ``data_batch`` frame holding ``frames``."""
    return '{"type":"data_batch","records":[' + ",".join(frames) + "]}"


@attrs.define(eq=False)
class Subscription:
    """One subscriber's end: batches of encoded JSON frames.

    Iterate it (``async for frames in subscription``) until the hub closes it;
    ``closed_reason`` then says why (``lagged`` or ``shutdown``). ``filter`` may be
    replaced at any time.
    """

    _receive: trio.MemoryReceiveChannel[Frames]
    _send: trio.MemorySendChannel[Frames]
    filter: Filter = EVERYTHING
    #: Prices and sizes as JSON strings instead of JSON numbers (``numbers=string``).
    strings: bool = False
    closed_reason: str | None = None
    queued: int = 0
    delivered: int = 0
    #: Set by the subscriber's endpoint when it can take a batch at once, from the hub's
    #: task (the socket written directly: ``server/routes/realtime.py``); returns False
    #: when it cannot now, and the batch is queued as usual.
    direct: Callable[[Frames], bool] | None = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Frames:
        try:
            batch = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None
        return self._taken(batch)

    def _taken(self, batch: Frames) -> Frames:
        self.queued -= len(batch)
        self.delivered += len(batch)
        return batch

    def waiting(self, up_to: int = CATCH_UP_RECORDS) -> list[Frames]:
        """Batches already queued, taken without waiting until about ``up_to`` records (for
        a subscriber that fell behind to catch up in fewer, larger frames, each of bounded
        size: a thousand laggards each building one huge frame would cost gigabytes)."""
        taken: list[Frames] = []
        total = 0
        while total < up_to:
            try:
                batch = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return taken
            taken.append(self._taken(batch))
            total += len(batch)
        return taken


@attrs.frozen
class HubStatistics:
    subscribers: int
    max_subscribers: int
    batches_in: int
    records_in: int
    frames_encoded: int
    notices: int
    lagged_disconnects: int
    #: Records queued for subscribers, all together and the most any one has waiting.
    queued_records: int = 0
    queued_max: int = 0
    #: Batches written to a subscriber's socket by the hub itself (``Subscription.direct``).
    direct_batches: int = 0


@attrs.define(eq=False)
class BroadcastHub:
    receive_channel: trio.MemoryReceiveChannel[HubItem]
    max_lag: int = DEFAULT_MAX_LAG
    max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS
    batches_in: int = 0
    records_in: int = 0
    frames_encoded: int = 0
    notices: int = 0
    lagged_disconnects: int = 0
    direct_batches: int = 0
    #: The highest record id published so far. Batches are published after their commit
    #: and in the order they took their ids, so every record of this instance at or below
    #: it is committed *and* already published: a resume reads the database up to here and
    #: takes the rest from its live queue (``server/resume.py``).
    published_id: int = 0
    fanout_seconds: Histogram = attrs.field(
        factory=lambda: Histogram((0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5))
    )
    _subscribers: set[Subscription] = attrs.field(factory=set)
    #: When the last publish began (Trio's clock): the next one waits for its linger.
    _published_at: float = float("-inf")

    @property
    def full(self) -> bool:
        return len(self._subscribers) >= self.max_subscribers

    @contextlib.contextmanager
    def subscribe(
        self, filter_: Filter = EVERYTHING, *, strings: bool = False
    ) -> Iterator[Subscription]:
        """Register a subscriber; raises :class:`TooManySubscribers` at the cap."""
        if self.full:
            raise TooManySubscribers(f"at most {self.max_subscribers} realtime subscribers")
        send, receive = trio.open_memory_channel[Frames](QUEUE_BATCHES)
        sub = Subscription(receive, send, filter_, strings)
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)
            send.close()
            receive.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        receive = self.receive_channel
        async for item in receive:
            if isinstance(item, Notice):
                self.publish_notice(item)
                continue
            # Records committed meanwhile go out with these, as one batch (notices keep
            # their place in the order).
            batch = list(item)
            linger = self.linger()
            publish_at = self._published_at + linger
            with trio.move_on_at(publish_at):
                while True:
                    try:
                        more = receive.receive_nowait()
                    except trio.WouldBlock:
                        if trio.current_time() >= publish_at:
                            break
                        more = await receive.receive()
                    except trio.EndOfChannel:
                        break
                    if isinstance(more, Notice):
                        self.publish(batch)
                        batch = []
                        self.publish_notice(more)
                    else:
                        batch += more
            self._published_at = trio.current_time()
            self.publish(batch)
        for sub in list(self._subscribers):
            self._close(sub, "shutdown")

    def linger(self) -> float:
        """The least time between the starts of two publishes (seconds)."""
        n = len(self._subscribers)
        return 0.0 if n < 2 else min(MAX_LINGER, n * LINGER_PER_SUBSCRIBER)

    def publish(self, batch: list[StoredRecord]) -> None:
        if not batch:
            return
        self.batches_in += 1
        self.records_in += len(batch)
        self.published_id = max(self.published_id, max(item.id for item in batch))
        if not self._subscribers:
            return
        # Lag is what a subscriber still has queued from earlier publishes: one that has
        # kept up takes this batch whatever its size (a commit after a stall, or the
        # gathered commits of a linger, can be bigger than ``max_lag``).
        for sub in list(self._subscribers):
            if sub.queued >= self.max_lag:
                self._lagged(sub)
        for i in range(0, len(batch), FRAME_RECORDS):
            self._publish(batch[i : i + FRAME_RECORDS] if len(batch) > FRAME_RECORDS else batch)

    def _publish(self, batch: list[StoredRecord]) -> None:
        started = time.perf_counter()
        numbers = Frames(encode_events(batch))
        numbers.ids = ids = [item.id for item in batch]
        strings: Frames | None = None  # encoded once, when a subscriber first wants them
        self.frames_encoded += len(numbers)
        for sub in list(self._subscribers):
            frames = numbers
            if sub.strings:
                if strings is None:
                    strings = Frames(encode_events(batch, strings=True))
                    strings.ids = ids
                    self.frames_encoded += len(strings)
                frames = strings
            f = sub.filter
            if f is EVERYTHING or f.everything:
                self._offer(sub, frames)
            else:
                picked = [
                    (item.id, frame)
                    for item, frame in zip(batch, frames, strict=True)
                    if f.accepts(item)
                ]
                chosen = Frames(frame for _, frame in picked)
                chosen.ids = [i for i, _ in picked]
                if chosen:
                    self._offer(sub, chosen)
        self.fanout_seconds.observe(time.perf_counter() - started)

    def publish_notice(self, notice: Notice) -> int:
        """Send a notice to every subscriber that wants it; return how many got it."""
        self.notices += 1
        frame = Frames([orjson.dumps(notice.payload).decode()])
        frame.ids = []
        delivered = 0
        for sub in list(self._subscribers):
            if sub.filter.accepts_notice(notice) and self._offer(sub, frame):
                delivered += 1
        return delivered

    def _offer(self, sub: Subscription, frames: Frames) -> bool:
        if sub.direct is not None and not sub.queued and sub.direct(frames):
            sub.delivered += len(frames)
            self.direct_batches += 1
            return True
        try:
            sub._send.send_nowait(frames)
        except trio.WouldBlock:  # QUEUE_BATCHES batches waiting: lagged too
            self._lagged(sub)
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._subscribers.discard(sub)
            return False
        sub.queued += len(frames)
        return True

    def _lagged(self, sub: Subscription) -> None:
        self.lagged_disconnects += 1
        logger.warning(
            "realtime subscriber lagged behind (%d records queued); disconnecting it", sub.queued
        )
        self._close(sub, "lagged")

    def _close(self, sub: Subscription, reason: str) -> None:
        sub.closed_reason = reason
        self._subscribers.discard(sub)
        sub._send.close()

    def statistics(self) -> HubStatistics:
        return HubStatistics(
            subscribers=len(self._subscribers),
            max_subscribers=self.max_subscribers,
            batches_in=self.batches_in,
            records_in=self.records_in,
            frames_encoded=self.frames_encoded,
            notices=self.notices,
            lagged_disconnects=self.lagged_disconnects,
            queued_records=sum(s.queued for s in self._subscribers),
            queued_max=max((s.queued for s in self._subscribers), default=0),
            direct_batches=self.direct_batches,
        )
