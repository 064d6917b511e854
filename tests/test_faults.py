"""The fault suite (RELIABILITY.md A1 to A3, D2): PostgreSQL goes away under a steady feed —
connections cut mid-COPY, a commit reply lost, an outage longer than any buffer, a full
spool, ``kill -9`` and ``SIGTERM`` in the middle, and comes back. Every trade id is
stored exactly once (or counted in a gap), realtime subscribers get each committed record
once, and the source is never dropped. The long versions (60 to 120 s at 10,000 msg/s) are
``bench`` scenarios."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Awaitable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import trio
import trio_websocket

from bench.fault_proxy import FaultProxy
from engine.config import Settings
from server.serve import Service, serve

from .conftest import evolve
from .fake_exchange import FakeExchange
from .test_cluster import start_instance, until

pytestmark = pytest.mark.e2e

TOTAL = 24_000  # 12 s of feed: data keeps arriving through every outage
RATE = 2_000


def trade_counts(dsn: str) -> list[tuple[int, int]]:
    """Each stored trade id (``t``) with how many times it is stored."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT (data->>'t')::bigint, count(*) FROM websocket_messages GROUP BY 1"
        ).fetchall()


async def stopped(service: Service) -> None:
    """Drain the in-process service and wait until it has stopped."""
    service.stop()
    with trio.fail_after(30):
        await service.engine.stopped.wait()


async def start_paced(
    client: httpx.AsyncClient, exchange: FakeExchange, count: int, base: str = ""
) -> str:
    """Create and start a connector reading ``count`` Binance trades at ``RATE``/s."""
    body = {
        "name": "steady",
        "api_url": exchange.url(f"/paced?count={count}&rate={RATE}"),
        "exchange": "binance",
    }
    created = await client.post(f"{base}/api/connectors", json=body)
    connector_id: str = created.json()["connector_id"]
    await client.post(f"{base}/api/connectors/{connector_id}/start")
    return connector_id


async def test_a_lost_commit_reply_stores_once_and_publishes_once(
    nursery: trio.Nursery, settings: Settings, exchange: FakeExchange, database_dsn: str
) -> None:
    """The proxy forwards a record batch's COMMIT, swallows PostgreSQL's reply and cuts
    the connection: the batch is stored, the writer cannot know it. Its retry must store
    nothing twice and still hand those records to realtime subscribers (once)."""
    total = 6_000  # 3 s at 2,000/s
    proxy: FaultProxy = await nursery.start(FaultProxy(database_dsn).run)
    settings = evolve(settings, postgres_dsn=proxy.dsn, pool_timeout=1.0)
    service: Service = await nursery.start(partial(serve, settings, handle_signals=False))
    ws_url = service.url.replace("http://", "ws://") + "/api/realtime?batch=true"
    got: Counter[int] = Counter()
    with trio.fail_after(60):
        async with (
            trio_websocket.open_websocket_url(ws_url) as ws,
            httpx.AsyncClient(base_url=service.url, timeout=30) as client,
        ):
            await start_paced(client, exchange, total)
            while not got:
                await _receive_trades(ws, got)
            proxy.lose_commit_reply()
            while len(got) < total:
                await _receive_trades(ws, got)
            with trio.move_on_after(0.5):  # nothing more may come: no trade twice
                while True:
                    await _receive_trades(ws, got)
    await stopped(service)
    assert proxy.commit_replies_lost == 1
    assert service.engine.writer.retries >= 1
    assert service.engine.writer.duplicates_skipped == 0  # found as this batch's own rows
    assert sorted(got) == list(range(1, total + 1))  # every trade reached the subscriber
    assert max(got.values()) == 1  # once
    rows = trade_counts(database_dsn)
    assert len(rows) == total
    assert max(count for _, count in rows) == 1


async def _receive_trades(ws: trio_websocket.WebSocketConnection, got: Counter[int]) -> None:
    frame = orjson.loads(await ws.get_message())
    if frame["type"] == "data_batch":
        for record in frame["records"]:
            got[record["data"]["t"]] += 1


async def test_database_outage_under_load_loses_and_duplicates_nothing(
    nursery: trio.Nursery, settings: Settings, exchange: FakeExchange, database_dsn: str
) -> None:
    proxy: FaultProxy = await nursery.start(FaultProxy(database_dsn).run)
    settings = evolve(settings, postgres_dsn=proxy.dsn, pool_timeout=1.0)
    service: Service = await nursery.start(partial(serve, settings, handle_signals=False))
    writer = service.engine.writer
    recovery_delays: list[float] = []
    connector_id = ""

    def done() -> bool:
        # A batch whose COMMIT reply was lost is stored; its retry then finds every row
        # already there and counts them as duplicates (skipped), not as new commits.
        stored = writer.committed_for(connector_id) + writer.duplicates_for(connector_id)
        return stored >= TOTAL

    with trio.fail_after(120):
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            connector_id = await start_paced(client, exchange, TOTAL)
            # Three outages: 1 s, 1 s, then 4 s, while trades keep arriving.
            for pause, outage in ((1.0, 1.0), (1.0, 1.0), (0.5, 4.0)):
                await trio.sleep(pause)
                committed_before = writer.rows_committed
                proxy.cut()
                await trio.sleep(outage)
                proxy.restore()
                restored_at = trio.current_time()
                while writer.rows_committed == committed_before and not done():
                    await trio.sleep(0.05)
                recovery_delays.append(trio.current_time() - restored_at)
            while not done():
                await trio.sleep(0.1)
            # An idle pooled connection the cut broke is only found out when used: the
            # first read after the outage may answer 503 (and discard it).
            with trio.fail_after(10):
                while (
                    response := await client.get(f"/api/connectors/{connector_id}/status")
                ).status_code == 503:
                    await trio.sleep(0.2)
            status = response.json()
            assert response.status_code == 200, status
    await stopped(service)

    rows = trade_counts(database_dsn)
    assert len(rows) == TOTAL  # nothing missing
    assert max(count for _, count in rows) == 1  # nothing twice
    assert sorted(t for t, _ in rows) == list(range(1, TOTAL + 1))
    assert writer.retries > 0  # the outages really hit the writer
    assert all(delay < 5.0 for delay in recovery_delays), recovery_delays
    assert status["reconnects"] == 0  # the source was never dropped
    assert status["messages_gap"] == 0
    assert status["accounting"]["records_pending"] == 0


SPOOL_TOTAL = 20_000  # 10 s at 2,000/s


@pytest.mark.parametrize("fault", ["cut", "stall"])
async def test_a_long_outage_goes_to_the_disk_spool_and_loses_nothing(
    nursery: trio.Nursery, settings: Settings, exchange: FakeExchange, database_dsn: str, fault: str
) -> None:
    """PostgreSQL unreachable (connections refused) or stalled (connections open, nothing
    answered) for seconds, with a connector buffer far too small to hold that (512 KiB,
    about a second of this feed): without the spool this is a gap; with it the
    source is read at full rate, the records wait on disk, and once the database is back
    every one is stored exactly once and the spool is empty again. A stall is noticed by
    the write timeout (1 s here). (The buffer was 256 KiB until a 260 ms garbage
    collection of the whole test process overflowed it once under a full suite.)"""
    proxy: FaultProxy = await nursery.start(FaultProxy(database_dsn).run)
    settings = evolve(
        settings,
        postgres_dsn=proxy.dsn,
        pool_timeout=1.0,
        connector_buffer_bytes=512 * 1024,
        write_timeout=1.0,
    )
    start_fault, end_fault = (
        (proxy.cut, proxy.restore) if fault == "cut" else (proxy.stall, proxy.resume)
    )
    service: Service = await nursery.start(partial(serve, settings, handle_signals=False))
    writer = service.engine.writer
    replayer = service.engine.replayer
    with trio.fail_after(120):
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            connector_id = await start_paced(client, exchange, SPOOL_TOTAL)
            await trio.sleep(1.0)
            start_fault()
            while replayer.statistics().bytes < 3_000_000:  # a few seconds of feed on disk
                await trio.sleep(0.1)
            spooled = replayer.statistics()
            end_fault()
            while writer.committed_for(connector_id) + writer.duplicates_for(connector_id) < (
                SPOOL_TOTAL
            ):
                await trio.sleep(0.1)
            while writer.spooling:
                await trio.sleep(0.1)
            status = (await client.get(f"/api/connectors/{connector_id}/status")).json()
    await stopped(service)
    rows = trade_counts(database_dsn)
    assert sorted(t for t, _ in rows) == list(range(1, SPOOL_TOTAL + 1))  # nothing missing
    assert max(count for _, count in rows) == 1  # nothing twice
    assert spooled.spooling
    assert spooled.records_spooled > 2 * RATE  # seconds of the feed went to disk (~2.3 MB)
    assert status["messages_gap"] == 0  # and so no gap, with a 512 KiB buffer
    assert status["reconnects"] == 0
    after = replayer.statistics()
    assert after.bytes == 0
    assert after.records_replayed >= spooled.records_spooled


async def test_kill_9_during_an_outage_and_the_next_start_replays_the_spool(
    nursery: trio.Nursery, exchange: FakeExchange, database_dsn: str, tmp_path: Path
) -> None:
    """What reached the spool survives ``kill -9``: the next process on the same data
    directory replays it once the database is back."""
    proxy: FaultProxy = await nursery.start(FaultProxy(database_dsn).run)
    data_dir = str(tmp_path / "data")
    first = await start_instance(nursery, proxy.dsn, data_dir)
    async with httpx.AsyncClient(timeout=30) as client:
        await start_paced(client, exchange, SPOOL_TOTAL, base=first.url)

        await until(lambda: _stored_any(database_dsn), 20, "records stored before the outage")
        proxy.cut()
        spooled = await until(
            lambda: _at_least(spool_of(client, first.url), "records_spooled", 2 * RATE),
            30,
            "spooled",
        )
        first.process.kill()  # kill -9 in the middle of the outage
        await first.process.wait()
        proxy.restore()
        second = await start_instance(nursery, proxy.dsn, data_dir)
        replayed = await until(
            lambda: _at_least(spool_of(client, second.url), "records_replayed", spooled),
            30,
            "replayed",
        )
        await until(lambda: _spool_empty(spool_of(client, second.url)), 30, "spool emptied")
        second.process.send_signal(signal.SIGTERM)
        assert await second.process.wait() == 0
    assert replayed >= spooled
    rows = trade_counts(database_dsn)
    assert max(count for _, count in rows) == 1  # the replay stored nothing twice


async def test_sigterm_during_replay_exits_cleanly_and_the_next_start_resumes_it(
    nursery: trio.Nursery, exchange: FakeExchange, database_dsn: str, tmp_path: Path
) -> None:
    """A process told to stop while it writes a backlog back from the spool exits 0 at
    once, leaving the rest on disk; the next start on the same data directory finishes
    the replay. Every trade the first process received is stored once, none lost."""
    proxy: FaultProxy = await nursery.start(FaultProxy(database_dsn).run)
    data_dir = str(tmp_path / "data")
    # Paced at 1,000 records/s so the replay of several seconds of feed is surely under
    # way when SIGTERM comes.
    first = await start_instance(nursery, proxy.dsn, data_dir, {"SLUICE_SPOOL_REPLAY_RATE": "1000"})
    async with httpx.AsyncClient(timeout=30) as client:
        cid = await start_paced(client, exchange, SPOOL_TOTAL, base=first.url)

        await until(lambda: _stored_any(database_dsn), 20, "records stored before the outage")
        proxy.cut()
        await until(
            lambda: _at_least(spool_of(client, first.url), "records_spooled", 3 * RATE),
            30,
            "spooled",
        )
        # The source stops: what the first process received is what must end up stored.
        await client.post(f"{first.url}/api/connectors/{cid}/stop")
        proxy.restore()
        await until(
            lambda: _at_least(spool_of(client, first.url), "records_replayed", 1), 30, "replay"
        )
        first.process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await first.process.wait() == 0
        left = sum(p.stat().st_size for p in (tmp_path / "data" / "spool").glob("*.spool"))
        assert left > 0  # the replay really was cut short
        second = await start_instance(nursery, proxy.dsn, data_dir)
        await until(
            lambda: _at_least(spool_of(client, second.url), "records_replayed", 1), 30, "resumed"
        )
        await until(lambda: _spool_empty(spool_of(client, second.url)), 30, "spool emptied")
        second.process.send_signal(signal.SIGTERM)
        assert await second.process.wait() == 0
    assert b"replaying them first" in second.log
    rows = trade_counts(database_dsn)
    trades = sorted(t for t, _ in rows)
    assert max(count for _, count in rows) == 1  # nothing twice
    assert trades == list(range(1, len(trades) + 1))  # nothing the first process read is lost
    assert len(trades) >= 3 * RATE


async def spool_of(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """The spool's statistics of the instance at ``url``."""
    return dict((await client.get(f"{url}/api/debug/actors")).json()["replayer"])


async def _stored_any(dsn: str) -> bool:
    # In a thread: the fault proxy runs on this event loop, and a query waiting on a lock
    # held by a transaction behind the proxy would otherwise wait for ever.
    def count() -> int:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM websocket_messages").fetchone()
        return row[0] if row else 0

    return await trio.to_thread.run_sync(count) > 0


async def _at_least(stats: Awaitable[dict[str, Any]], key: str, n: int) -> int | None:
    value = int((await stats)[key])
    return value if value >= n else None


async def _spool_empty(stats: Awaitable[dict[str, Any]]) -> bool:
    s = await stats
    return s["bytes"] == 0 and not s["spooling"]


async def test_a_full_spool_is_a_counted_gap_and_the_server_keeps_running(
    nursery: trio.Nursery, settings: Settings, exchange: FakeExchange, database_dsn: str
) -> None:
    """The spool's bound (here 300 kB, a fraction of the outage) stands for a full disk:
    past it records are a ``spool_overflow`` gap with their count, never a crash, and
    everything else is stored once the database is back."""
    proxy: FaultProxy = await nursery.start(FaultProxy(database_dsn).run)
    settings = evolve(
        settings,
        postgres_dsn=proxy.dsn,
        pool_timeout=1.0,
        connector_buffer_bytes=256 * 1024,
        spool_max_bytes=300_000,
    )
    service: Service = await nursery.start(partial(serve, settings, handle_signals=False))
    writer = service.engine.writer
    with trio.fail_after(120):
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            connector_id = await start_paced(client, exchange, SPOOL_TOTAL)
            await trio.sleep(1.0)
            proxy.cut()
            while writer.rows_spool_lost < RATE:  # a second of the feed found no room
                await trio.sleep(0.1)
            proxy.restore()
            while (
                writer.committed_for(connector_id)
                + writer.duplicates_for(connector_id)
                + writer.rows_spool_lost
                < SPOOL_TOTAL
            ):
                await trio.sleep(0.1)
            while writer.spooling:
                await trio.sleep(0.1)
            assert (await client.get("/healthz")).status_code == 200

            async def overflow_gaps() -> list[dict[str, Any]]:
                body = (await client.get(f"/api/connectors/{connector_id}/gaps")).json()
                return [g for g in body["data"] if g["cause"] == "spool_overflow"]

            # The journal writes gap records as the database lets it. While the replay
            # frees room and live records fill it again, each stretch is its own gap.
            overflow = await overflow_gaps()
            while sum(g["messages_lost"] for g in overflow) < writer.rows_spool_lost:
                await trio.sleep(0.1)
                overflow = await overflow_gaps()
    await stopped(service)
    assert overflow
    assert sum(g["messages_lost"] for g in overflow) == writer.rows_spool_lost
    # One gap per stretch of refusals, not one per refused batch (how many stretches
    # depends on how the replay and live appends take turns while it is full).
    assert len(overflow) < writer.spool_refusals
    with psycopg.connect(database_dsn) as conn:
        row = conn.execute("SELECT count(DISTINCT data->>'t') FROM websocket_messages").fetchone()
    assert row is not None
    assert row[0] + writer.rows_spool_lost == SPOOL_TOTAL  # every trade stored or counted
