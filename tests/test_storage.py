"""Storage and the batching writer against a real PostgreSQL (real time, no mock clock:
the writer hops to threads)."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import attrs
import orjson
import psycopg
import pytest
import trio

from engine.config import Settings
from engine.models import ConnectorSpec, Record, StoredRecord, evolve_record
from engine.retention import Retention
from engine.storage import Database, cluster, migrations, partitions
from engine.storage.connectors import insert_connector
from engine.storage.records import ID_TURN, SMALL_BATCH, IdTurn, insert_records
from engine.writer import BatchWriter

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
BIG = 123456789012345678901234567890


def record(n: int, *, price: str = "1.10", instrument: str = "BTC-USDT") -> Record:
    return Record(
        connector_id="conn_a",
        exchange="okx",
        instrument=instrument,
        price=price,
        size="0.00000001",
        side="buy",
        message_type="trade",
        timestamp=NOW,
        received_at=NOW,
        data=b'{"tradeId":"%d","px":"%s","big":123456789012345678901234567890}'
        % (n, price.encode()),
        dedup_key=f"t:{instrument}:{n}",
    )


async def test_migrations_are_idempotent(settings: Settings) -> None:
    async with Database.open(settings) as db:
        assert await db.run(migrations.migrate) == migrations.Migrated([], 0)
        assert await db.run(migrations.applied_version) == migrations.latest_version()


@pytest.mark.parametrize("filler", [0, SMALL_BATCH], ids=["json", "copy"])
async def test_insert_is_exact_and_idempotent(
    settings: Settings, database_dsn: str, filler: int
) -> None:
    # A few rows take one INSERT from JSON; more than SMALL_BATCH go by COPY (text format).
    extra = [record(1000 + i) for i in range(filler)]
    async with Database.open(settings) as db:
        batch = [record(1), record(2, price="42219.90"), *extra]
        stored, duplicates = await db.run(insert_records, batch)
        assert duplicates == 0
        assert [s.record.dedup_key for s in stored][:2] == ["t:BTC-USDT:1", "t:BTC-USDT:2"]
        assert stored[0].id < stored[1].id
        # A retry after a lost commit reply inserts nothing twice.
        again, duplicates = await db.run(insert_records, [record(1), record(2), record(3), *extra])
        assert duplicates == 2 + filler
        assert [s.record.dedup_key for s in again] == ["t:BTC-USDT:3"]
    with psycopg.connect(database_dsn) as conn:
        rows = conn.execute(
            "SELECT price, size, data->>'tradeId', jsonb_typeof(data), data->'big'"
            " FROM websocket_messages WHERE dedup_key IN ('t:BTC-USDT:1', 't:BTC-USDT:2',"
            " 't:BTC-USDT:3') ORDER BY id"
        ).fetchall()
    assert [r[0] for r in rows] == [Decimal("1.10"), Decimal("42219.90"), Decimal("1.10")]
    assert str(rows[1][0]) == "42219.90"  # digits as the source wrote them
    assert rows[0][1] == Decimal("0.00000001")
    assert [r[2] for r in rows] == ["1", "2", "3"]
    assert rows[0][3] == "object"  # stored as a JSON object, not a JSON string
    assert rows[0][4] == BIG  # big numbers not squeezed through float


@pytest.mark.parametrize("step", [1, 3], ids=["consecutive", "scattered"])
async def test_a_copy_batch_gets_the_ids_the_table_holds(
    settings: Settings, database_dsn: str, step: int
) -> None:
    # A COPY batch takes its ids in one statement, as their bounds when they are
    # consecutive, or every one when another session's nextval came between them (made
    # here by a sequence that steps by 3): either way each record gets its row's id.
    async with Database.open(settings) as db:
        await db.run(lambda conn: conn.execute(f"ALTER SEQUENCE record_id_seq INCREMENT {step}"))
        stored, _ = await db.run(insert_records, [record(i) for i in range(SMALL_BATCH + 5)])
    with psycopg.connect(database_dsn) as conn:
        table = dict(conn.execute("SELECT dedup_key, id FROM websocket_messages").fetchall())
    assert {s.record.dedup_key: s.id for s in stored} == table
    ids = [s.id for s in stored]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids) == SMALL_BATCH + 5
    assert {b - a for a, b in itertools.pairwise(ids)} == {step}


async def test_writer_isolates_a_poison_record_and_commits_the_rest(
    settings: Settings, database_dsn: str
) -> None:
    records = [record(n) for n in range(1, 101)]
    records[41] = record(42, instrument="bad\x00instrument")  # PostgreSQL refuses NUL in text
    # In the same batch, a record of a day with no partition yet: created, not rejected.
    records[7] = evolve_record(record(8), timestamp=datetime(2019, 5, 1, tzinfo=UTC))
    rec_send, rec_recv = trio.open_memory_channel[list[Record]](10)
    out_send, out_recv = trio.open_memory_channel[list[StoredRecord]](100)
    async with Database.open(settings) as db:
        writer = BatchWriter(db, rec_recv, out_send, batch_size=1000, max_age=0.01)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.run)
                await rec_send.send(records)
                rec_send.close()
        committed = [item async for batch in out_recv for item in batch]
    assert len(committed) == 99
    assert writer.statistics().rows_rejected == 1
    assert writer.rejected_for("conn_a") == 1
    assert writer.committed_for("conn_a") == 99
    with psycopg.connect(database_dsn) as conn:
        row = conn.execute("SELECT count(*) FROM websocket_messages").fetchone()
    assert row is not None
    assert row[0] == 99


async def test_writer_flushes_on_age_before_the_batch_is_full(settings: Settings) -> None:
    rec_send, rec_recv = trio.open_memory_channel[list[Record]](10)
    out_send, out_recv = trio.open_memory_channel[list[StoredRecord]](10)
    async with Database.open(settings) as db:
        writer = BatchWriter(db, rec_recv, out_send, batch_size=1000, max_age=0.05)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            with trio.fail_after(10):
                await rec_send.send([record(1), record(2)])
                first = await out_recv.receive()  # arrives although 998 short of a batch
            assert [s.record.dedup_key for s in first] == ["t:BTC-USDT:1", "t:BTC-USDT:2"]
            rec_send.close()


@attrs.define
class SlowFirstBatchSink:
    """A stand-in database whose first batch commits long after the second."""

    calls: list[str] = attrs.field(factory=list)
    concurrent: int = 0
    most_concurrent: int = 0
    # Every day has its partition, as far as the writer can tell.
    partition_days: dict[str, set[date]] = attrs.field(
        factory=lambda: {t: {NOW.date()} for t in partitions.RECORD_TABLES}
    )

    async def sink(
        self, fn: object, records: list[Record], recover: bool = False
    ) -> tuple[list[StoredRecord], int]:
        self.calls.append(records[0].dedup_key)
        self.concurrent += 1
        self.most_concurrent = max(self.most_concurrent, self.concurrent)
        await trio.sleep(1.0 if len(self.calls) == 1 else 0.01)
        self.concurrent -= 1
        first = int(records[0].dedup_key.rsplit(":", 1)[1])
        return [StoredRecord(id=first + i, record=r) for i, r in enumerate(records)], 0


async def test_writer_overlaps_batches_but_publishes_them_in_order() -> None:
    rec_send, rec_recv = trio.open_memory_channel[list[Record]](10)
    out_send, out_recv = trio.open_memory_channel[list[StoredRecord]](10)
    db = SlowFirstBatchSink()
    writer = BatchWriter(db, rec_recv, out_send, batch_size=3, concurrency=2)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await rec_send.send([record(n) for n in range(9)])
        rec_send.close()
        published = [[s.id for s in batch] async for batch in out_recv]
    # The second batch was written while the first (slow) one was still committing ...
    assert db.most_concurrent == 2
    # ... yet batches reach the hub in the order they were formed, and every record once.
    assert published == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert writer.rows_committed == 9
    assert writer.statistics().pending == 0


def made(n: int, connector: str, when: datetime) -> Record:
    """Record ``n`` of ``connector`` at ``when``."""
    return evolve_record(record(n), connector_id=connector, timestamp=when)


# A connector that keeps its old data despite the global policy.
KEEPER = ConnectorSpec(
    connector_id="conn_keep",
    name="keep",
    api_url="ws://h/",
    protocol="websocket",
    exchange="okx",
    retention_days=100_000,
)


async def test_retention_deletes_old_rows_in_batches_honouring_connector_policy(
    settings: Settings, database_dsn: str
) -> None:
    old = datetime(2020, 1, 1, tzinfo=UTC)
    recent = datetime.now(UTC)
    make = made

    async with Database.open(settings) as db:
        await db.run(insert_connector, KEEPER)
        rows = [make(n, "conn_a", old) for n in range(25)]
        rows += [make(100 + n, "conn_a", recent) for n in range(5)]
        rows += [make(200 + n, "conn_keep", old) for n in range(3)]
        await db.run(insert_records, rows)
        retention = Retention(db, default_days=30, batch=10)
        assert await retention.run_once() == 25
        assert await retention.run_once() == 0
    with psycopg.connect(database_dsn) as conn:
        left = conn.execute(
            "SELECT connector_id, count(*) FROM websocket_messages GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert left == [("conn_a", 5), ("conn_keep", 3)]


@pytest.mark.parametrize("size", [10, SMALL_BATCH + 1], ids=["json", "copy"])
@pytest.mark.parametrize("source", ["websocket", "rest"])
async def test_inserts_keep_every_character_and_value_exactly(
    settings: Settings, database_dsn: str, source: str, size: int
) -> None:
    """Both insert paths — a small batch as one JSON parameter, a larger one by COPY's
    text format — keep what they must: backslashes, tabs, newlines and carriage returns in
    any text column and in a pretty-printed payload come back as sent, with numbers,
    times (to the microsecond), NULLs and the REST columns."""
    nasty = 'a\\b\tc\nd\re "q" é \\N'
    payload = b'{\n\t"s": "x\\\\y\\ttab \\u00e9",\r\n  "n": [1, 2.50, null]\n}'
    when = datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC)
    batch = [
        evolve_record(
            record(i),
            instrument=nasty if i % 2 else None,
            side=None,
            source_id=nasty + str(i),
            dedup_key=f"{nasty}:{i}",
            data=payload,
            timestamp=when,
            bid_price="-0.000000010",
            source=source,
            status_code=200 if source == "rest" else None,
            response_time_ms=0.1 + 0.2 if source == "rest" else None,
            format=nasty if source == "websocket" else None,
            message_number=i // 3 if source == "websocket" else None,
            ask_size="2.5" if i % 5 == 0 else None,
        )
        for i in range(size)
    ]
    async with Database.open(settings) as db:
        stored, duplicates = await db.run(insert_records, batch)
    assert (len(stored), duplicates) == (len(batch), 0)
    table = "websocket_messages" if source == "websocket" else "api_connector_data"
    extra = "format, message_number" if source == "websocket" else "status_code, response_time_ms"
    with psycopg.connect(database_dsn) as conn:
        rows = conn.execute(
            f"SELECT instrument, side, source_id, dedup_key, data::text, data, timestamp,"
            f" bid_price::text, price::text, {extra}, ask_size::text FROM {table} ORDER BY id"
        ).fetchall()
    for i, row in enumerate(rows):
        assert row[0] == (nasty if i % 2 else None)
        assert row[1] is None
        assert (row[2], row[3]) == (nasty + str(i), f"{nasty}:{i}")
        assert row[5] == orjson.loads(payload)
        assert row[6] == when
        assert (row[7], row[8]) == ("-0.000000010", "1.10")
        assert row[11] == ("2.5" if i % 5 == 0 else None)
        if source == "websocket":
            assert (row[9], row[10]) == (nasty, i // 3)
        else:
            assert (row[9], row[10]) == (200, 0.1 + 0.2)


@pytest.mark.parametrize("size", [10, SMALL_BATCH + 1], ids=["json", "copy"])
async def test_concurrent_batches_take_record_ids_in_batch_order(
    settings: Settings, size: int
) -> None:
    """The writer writes two batches at once; ids must follow the order it formed them
    (and publishes them in). Batch A's thread is held up before it writes: without turns
    batch B takes the lower ids, with them A still does (:class:`IdTurn`)."""

    def held_up(conn: psycopg.Connection[Any], records: list[Record]) -> Any:
        time.sleep(0.3)
        return insert_records(conn, records)

    async def write(
        db: Database, fn: Any, records: list[Record], turn: IdTurn | None, out: list[int]
    ) -> None:
        ID_TURN.set(turn)
        stored, _ = await db.sink(fn, records)
        out += [s.id for s in stored]

    async with Database.open(settings) as db:
        for ordered in (False, True):
            base = 10_000 * (1 + ordered)
            a = [record(base + i) for i in range(size)]
            b = [record(base + 5_000 + i) for i in range(size)]
            first = IdTurn(None) if ordered else None
            second = IdTurn(first.taken) if first is not None else None
            ids_a: list[int] = []
            ids_b: list[int] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write, db, held_up, a, first, ids_a)
                await trio.sleep(0.05)
                nursery.start_soon(write, db, insert_records, b, second, ids_b)
            assert (max(ids_a) < min(ids_b)) is ordered


@pytest.mark.parametrize("announce", [False, True], ids=["alone", "announced"])
async def test_a_fenced_write_drops_only_the_records_of_a_lost_lease(
    settings: Settings, database_dsn: str, tmp_path: Any, announce: bool
) -> None:
    # Connector a's run holds its lease at epoch 1; b's lease moved on to epoch 2 (another
    # instance took it over): b's run records are dropped and counted, b's save (no
    # session) and a's records are stored, and a's record stored before is a duplicate.
    # A small write is committed in one round trip (the server answers once: one
    # ReadyForQuery), the lease check applied by the insert itself; in a cluster the
    # notification of the stored ids goes with it, worded as notify_committed words it.
    me = "inst_me"
    a, b = (attrs.evolve(KEEPER, connector_id=c, name=c) for c in ("conn_a", "conn_b"))

    def run(connector: str, n: int, session: str | None = "s1") -> Record:
        return evolve_record(made(n, connector, NOW), session_id=session)

    async with Database.open(settings) as db:
        for spec in (a, b):
            await db.run(insert_connector, spec)
            await db.run(cluster.acquire, spec.connector_id, me, 60.0)
        await db.run(
            lambda conn: conn.execute(
                "UPDATE connector_leases SET epoch = 2 WHERE connector_id = 'conn_b'"
            )
        )
        await db.run(insert_records, [run("conn_a", 1)])
        batch = [run("conn_a", 1), run("conn_a", 2), run("conn_b", 3), run("conn_b", 4)]
        batch += [run("conn_b", 5, session=None), run("conn_a", 6)]
        trace = tmp_path / "libpq.trace"

        def write(conn: psycopg.Connection[Any]) -> Any:
            with trace.open("w") as out:
                conn.pgconn.trace(out.fileno())
                try:
                    return cluster.write_fenced(
                        conn, batch, me, {"conn_a": 1, "conn_b": 1}, {"conn_a", "conn_b"}, announce
                    )
                finally:
                    conn.pgconn.untrace()

        listener = await trio.to_thread.run_sync(
            lambda: psycopg.connect(database_dsn, autocommit=True)
        )
        listener.execute(f"LISTEN {cluster.FEED_CHANNEL}")
        stored, duplicates, fenced = await db.run(write)
        # The same batch again: nothing stored, so nothing announced.
        epochs = {"conn_a": 1, "conn_b": 1}
        again = await db.run(cluster.write_fenced, batch, me, epochs, set(epochs), announce)
        assert again == ([], 4, {"conn_b": 2})
        told = [
            orjson.loads(n.payload) for n in listener.notifies(timeout=0.5 if announce else 0.1)
        ]
        listener.close()
    assert [s.record.dedup_key for s in stored] == ["t:BTC-USDT:2", "t:BTC-USDT:5", "t:BTC-USDT:6"]
    assert duplicates == 1
    assert fenced == {"conn_b": 2}
    with psycopg.connect(database_dsn) as conn:
        table = conn.execute(
            "SELECT connector_id, dedup_key FROM websocket_messages ORDER BY id"
        ).fetchall()
    assert table == [
        ("conn_a", "t:BTC-USDT:1"),
        ("conn_a", "t:BTC-USDT:2"),
        ("conn_b", "t:BTC-USDT:5"),
        ("conn_a", "t:BTC-USDT:6"),
    ]
    assert trace.read_text().count("ReadyForQuery") == 1
    ids = [s.id for s in stored]
    expected = {"i": me, "t": "records", "s": "websocket_messages", "r": cluster.id_ranges(ids)}
    assert told == ([expected] if announce else [])
