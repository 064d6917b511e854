"""The broadcast hub: serialize once, never wait for a subscriber, drop laggards."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson
import trio
from hypothesis import given
from hypothesis import strategies as st

from engine.hub import (
    CATCH_UP_RECORDS,
    FRAME_RECORDS,
    LINGER_PER_SUBSCRIBER,
    MAX_LINGER,
    SHARED_RECORDS,
    BroadcastHub,
    Frames,
    Notice,
    catch_up,
    encode_event,
    encode_events,
)
from engine.models import Record, StoredRecord

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def stored(n: int) -> StoredRecord:
    record = Record(
        connector_id="conn_a",
        exchange="binance",
        instrument="BTCUSDT",
        price="1.10",
        size="2",
        side="buy",
        message_type="trade",
        timestamp=NOW,
        received_at=NOW,
        data=b'{"t":%d}' % n,
        dedup_key=str(n),
    )
    return StoredRecord(id=n, record=record)


def hub() -> BroadcastHub:
    _, receive = trio.open_memory_channel[list[StoredRecord]](0)
    return BroadcastHub(receive, max_lag=5)


async def test_events_carry_the_database_id_and_raw_payload() -> None:
    h = hub()
    with h.subscribe() as sub:
        h.publish([stored(7)])
        [frame] = await sub.__anext__()
    # Prices and sizes are JSON numbers written with the source's own digits.
    assert '"price":1.10,"size":2,' in frame
    event = orjson.loads(frame)
    assert event == {
        "type": "data_update",
        "id": 7,
        "source_id": None,
        "session_id": None,
        "connector_id": "conn_a",
        "timestamp": "2026-11-27T00:00:00+00:00",
        "received_at": "2026-11-27T00:00:00+00:00",
        "exchange": "binance",
        "instrument": "BTCUSDT",
        "price": 1.1,
        "size": 2,
        "side": "buy",
        "message_type": "trade",
        "bid_price": None,
        "bid_size": None,
        "ask_price": None,
        "ask_size": None,
        "data": {"t": 7},
    }


async def test_slow_subscriber_is_lagged_and_others_keep_everything() -> None:
    h = hub()
    with h.subscribe() as slow, h.subscribe() as fast:
        received: list[str] = []
        for n in range(10):
            h.publish([stored(n)])
            if n == 3:  # what each has waiting: slow 4 records, fast 1
                assert (h.statistics().queued_records, h.statistics().queued_max) == (5, 4)
            received.extend(await fast.__anext__())  # fast reads as it goes; slow never does
        assert len(received) == 10
        assert slow.closed_reason == "lagged"
        assert fast.closed_reason is None
        assert [len(batch) async for batch in slow] == [1] * 5  # what it had, then the end
    stats = h.statistics()
    assert stats.lagged_disconnects == 1
    assert stats.subscribers == 0
    assert stats.frames_encoded == 10  # once per record, not once per subscriber


async def test_a_subscriber_that_keeps_up_takes_a_commit_bigger_than_max_lag() -> None:
    # A commit after a stall (or the commits a linger gathers) can hold more records than
    # max_lag; only what is still queued from earlier publishes counts as lag.
    h = hub()
    with h.subscribe() as sub:
        h.publish([stored(n) for n in range(12)])
        assert sub.closed_reason is None
        received = [frame for batch in sub.waiting(up_to=100) for frame in batch]
        assert len(received) == 12
        h.publish([stored(n) for n in range(12, 20)])
        h.publish([stored(20)])  # 8 still queued (≥ max_lag 5): now it lags
        assert sub.closed_reason == "lagged"


async def test_no_subscribers_means_no_serialization() -> None:
    h = hub()
    h.publish([stored(1), stored(2)])
    assert h.statistics().frames_encoded == 0


async def test_subscribers_share_one_batch_frame_and_laggards_catch_up_in_one() -> None:
    h = BroadcastHub(trio.open_memory_channel[list[StoredRecord]](0)[1], max_lag=100)
    with h.subscribe() as first, h.subscribe() as second:
        h.publish([stored(1), stored(2)])
        h.publish([stored(3)])
        a = await first.__anext__()
        b = await second.__anext__()
        assert a is b  # the same encoded frames object for the same filter ...
        assert a.batch_text() is b.batch_text()  # ... so the batch frame is built once
        frame = orjson.loads(a.batch_text())
        assert frame["type"] == "data_batch"
        assert [r["id"] for r in frame["records"]] == [1, 2]
        waiting = first.waiting()  # what is already queued, without waiting
        assert [[orjson.loads(f)["id"] for f in batch] for batch in waiting] == [[3]]
        assert first.waiting() == []
        assert (first.queued, first.delivered) == (0, 3)


async def test_many_subscribers_get_commits_gathered_into_fewer_batches(
    autojump_clock: trio.abc.Clock,
) -> None:
    """With many subscribers the hub publishes at most once per linger (longer the more
    there are), what committed meanwhile as one batch; notices keep their place. The
    linger counts from the last publish: a commit after a quiet spell (or after a fan-out
    that took longer than the linger) goes out at once."""
    send, receive = trio.open_memory_channel[object](10)
    h = BroadcastHub(receive, max_lag=1000)  # type: ignore[arg-type]
    assert h.linger() == 0
    with h.subscribe() as only:
        assert h.linger() == 0  # one subscriber: published as soon as committed
        with h.subscribe() as other:
            assert h.linger() == 2 * LINGER_PER_SUBSCRIBER
            h._subscribers.update({object() for _ in range(10_000)})  # type: ignore[misc]
            assert h.linger() == MAX_LINGER
            h._subscribers = {only, other}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(h.run)
                linger = 2 * LINGER_PER_SUBSCRIBER
                started = trio.current_time()
                await send.send([stored(1)])
                alone = await only.__anext__()
                assert trio.current_time() == started  # nothing published before it
                await send.send([stored(2), stored(3)])
                await send.send(Notice("conn_a", {"type": "gap"}))
                await send.send([stored(4)])
                first = await only.__anext__()
                second = await only.__anext__()
                third = await only.__anext__()
                assert trio.current_time() - started == linger
                await trio.sleep(3 * linger)  # quiet: the next commit goes out at once
                quiet = trio.current_time()
                await send.send([stored(5)])
                assert [orjson.loads(f)["id"] for f in await only.__anext__()] == [5]
                assert trio.current_time() == quiet
                send.close()
            assert [orjson.loads(f)["id"] for f in alone] == [1]
            assert [orjson.loads(f)["id"] for f in first] == [2, 3]
            assert [orjson.loads(f)["type"] for f in second] == ["gap"]
            assert [orjson.loads(f)["id"] for f in third] == [4]
            assert h.statistics().batches_in == 4


async def test_a_big_commit_goes_out_in_frames_of_bounded_size() -> None:
    """However big the writer's batch, a batch frame holds at most FRAME_RECORDS records
    (clients' default message limits are about 1 MiB)."""
    h = BroadcastHub(trio.open_memory_channel[list[StoredRecord]](0)[1], max_lag=10_000)
    with h.subscribe() as sub:
        h.publish([stored(n) for n in range(2 * FRAME_RECORDS + 7)])
        sizes = [len(await sub.__anext__()) for _ in range(3)]
        assert sizes == [FRAME_RECORDS, FRAME_RECORDS, 7]
        assert sub.waiting() == []
    assert h.statistics().records_in == 2 * FRAME_RECORDS + 7


def test_a_subscriber_behind_sends_big_batches_shared_and_joins_small_ones() -> None:
    def batch(first: int, n: int) -> Frames:
        return Frames(f'{{"id":{i}}}' for i in range(first, first + n))

    big = batch(0, SHARED_RECORDS)
    small = [batch(1000 + 10 * k, 10) for k in range(3)]
    texts = catch_up([small[0], small[1], big, small[2]])
    assert texts[1] is big.batch_text()  # the very text every other subscriber sends
    assert texts[2] is small[2].batch_text()  # a lone small batch is shared too
    assert [r["id"] for r in orjson.loads(texts[0])["records"]] == [
        *range(1000, 1010),
        *range(1010, 1020),
    ]
    many = [batch(10 * k, 10) for k in range(CATCH_UP_RECORDS // 10 + 5)]
    joined = catch_up(many)
    assert [len(orjson.loads(t)["records"]) for t in joined] == [CATCH_UP_RECORDS, 50]
    every = [r["id"] for t in joined for r in orjson.loads(t)["records"]]
    assert every == list(range(10 * len(many)))


_texts = st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["BTCUSDT", "buy", 'x"y\\z']))
_decimals = st.one_of(
    st.none(), st.from_regex(r"-?(0|[1-9][0-9]{0,6})(\.[0-9]{1,6})?", fullmatch=True)
)
_times = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, ZoneInfo("Etc/UTC")]),
)


@given(
    st.lists(
        st.builds(
            Record,
            connector_id=_texts,
            exchange=st.sampled_from(["binance", "okx", "custom"]),
            instrument=_texts,
            price=_decimals,
            size=_decimals,
            side=_texts,
            message_type=st.sampled_from(["trade", "ticker", "book_delta"]),
            timestamp=_times,
            received_at=_times,
            data=st.sampled_from([b"{}", b'{"a":"\\u00e9","b":[1,2.5]}', b"[1]"]),
            dedup_key=st.just("k"),
            source=st.sampled_from(["websocket", "websocket", "rest"]),
            bid_price=_decimals,
            status_code=st.sampled_from([None, 200]),
            response_time_ms=st.sampled_from([None, 12.5, 1e-7]),
            source_id=st.one_of(
                st.none(), st.text(max_size=6), st.from_regex(r"[0-9]{1,12}", fullmatch=True)
            ),
            session_id=_texts,
        ),
        max_size=6,
    ),
    st.booleans(),
)
def test_batch_encoding_is_byte_for_byte_the_per_record_encoding(
    records: list[Record], strings: bool
) -> None:
    items = [StoredRecord(id=i + 1, record=r) for i, r in enumerate(records)]
    assert encode_events(items, strings=strings) == [
        encode_event(item, strings=strings) for item in items
    ]
