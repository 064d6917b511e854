"""The processor actor: what it hands the writer, and when."""

from __future__ import annotations

import time

import trio

from engine.models import Record, SourceBatch
from engine.processor import Processor


def trades(first: int, n: int) -> list[bytes | str]:
    return [
        b'{"e":"trade","E":1700000000000,"s":"BTCUSDT","t":%d,"p":"1.5","q":"2",'
        b'"T":1700000000000,"m":true}' % (first + i)
        for i in range(n)
    ]


def batch(first: int, n: int) -> SourceBatch:
    return SourceBatch("conn_p", "binance", trades(first, n), [time.time()] * n)


async def test_waiting_batches_go_to_the_writer_together_up_to_a_bound() -> None:
    # Thirty one-trade batches of quiet feeds and twelve of a hundred trades, all waiting
    # at once: they go on in few lists (one hop each to the writer), none growing past the
    # bound by more than the batch that crossed it. The bound is also what a backlog holds
    # decoded (COALESCE_RECORDS, 500), so a list of 2,000 (the old bound) must not come out.
    raw_send, raw_recv = trio.open_memory_channel[SourceBatch](100)
    out_send, out_recv = trio.open_memory_channel[list[Record]](100)
    for i in range(30):
        raw_send.send_nowait(batch(i, 1))
    for j in range(12):
        raw_send.send_nowait(batch(1000 + 100 * j, 100))
    raw_send.close()
    with trio.fail_after(10):
        await Processor(raw_recv, out_send).run()
        lists = [records async for records in out_recv]
    assert [len(records) for records in lists] == [530, 500, 200]
    ids = [int(r.dedup_key.rsplit(":", 1)[-1]) for records in lists for r in records]
    assert ids == [*range(30), *range(1000, 2200)]  # every trade, in order
