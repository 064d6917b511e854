"""Writing record batches: COPY (text format, one buffer per batch) straight into the
table; if that hits the unique index, binary COPY into a per-connection staging table and
one ``INSERT … SELECT … ON CONFLICT DO NOTHING``, so a retried batch never duplicates.

Prices and sizes travel as the source's decimal text and are cast to ``numeric`` by
PostgreSQL, so they are stored exactly; a value it refuses fails the batch with a data
error, which the writer isolates by splitting.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Any, TypeVar

import attrs
import msgspec
import psycopg

from ..memo import per_batch
from ..models import Record, StoredRecord
from . import partitions
from .database import RawJsonb

T = TypeVar("T")

TABLES = {"websocket": "websocket_messages", "rest": "api_connector_data"}


# How long a batch waits for the one before it to take its record ids (see IdTurn).
TURN_WAIT = 10.0


@attrs.define(eq=False)
class IdTurn:
    """A batch's place in the order record ids are taken.

    The writer writes up to two batches at once, each from its own thread and transaction,
    and publishes them in the order it formed them; record ids must follow that order too
    (a client resuming after id N must not have missed a lower id published later). The
    sequence hands ids out in the order the statements that take them run, so each batch
    takes its ids only after the batch before it has taken its own: the ``nextval``
    before a COPY, or the whole ``INSERT`` of a small batch. The wait is bounded
    (``TURN_WAIT``), and a batch that fails or is abandoned still ends its turn.

    Found 2026-12-06: ``test_resume`` saw trades out of id order once small batches
    became cheap to encode (``_insert_values``) and the second of two concurrent batches
    could reach PostgreSQL first.
    """

    previous: threading.Event | None
    #: Allocations this batch makes (one per source table it writes).
    remaining: int = 1
    taken: threading.Event = attrs.field(factory=threading.Event)

    @contextlib.contextmanager
    def allocating(self) -> Iterator[None]:
        if self.previous is not None:
            self.previous.wait(TURN_WAIT)
        try:
            yield
        finally:
            self.remaining -= 1
            if self.remaining <= 0:
                self.taken.set()

    def end(self) -> None:
        self.taken.set()


#: The turn of the batch being written (the writer sets it; worker threads inherit it).
ID_TURN: ContextVar[IdTurn | None] = ContextVar("id_turn", default=None)


def _allocating() -> contextlib.AbstractContextManager[None]:
    turn = ID_TURN.get()
    return turn.allocating() if turn is not None else contextlib.nullcontext()


SMALL_BATCH = 256  # up to this many rows: one INSERT from JSON instead of COPY (see _insert_values)

# The record columns common to both tables, in the order of _text_columns().
_COLUMNS = (
    'connector_id, exchange, instrument, price, size, side, message_type, "timestamp",'
    " received_at, data, dedup_key, bid_price, bid_size, ask_price, ask_size, source_id,"
    " session_id"
)
_COPY = (
    f"COPY sluice_staging_v4 (ord, {_COLUMNS}, batch_id, status_code, response_time_ms,"
    " message_number, format) FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = [
    "int4",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "timestamptz",
    "timestamptz",
    "jsonb",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "int8",
    "int4",
    "float8",
    "int8",
    "text",
]
_INSERT = f"""
INSERT INTO {{table}} ({_COLUMNS}{{extra}})
SELECT connector_id, exchange, instrument, price::numeric, size::numeric, side, message_type,
       "timestamp", received_at, data, dedup_key,
       bid_price::numeric, bid_size::numeric, ask_price::numeric, ask_size::numeric,
       source_id, session_id{{extra}}
FROM sluice_staging_v4 ORDER BY ord
ON CONFLICT DO NOTHING
RETURNING id, connector_id, dedup_key
"""
# websocket_messages keeps what a saved message arrived with (its batch, messageNumber and
# format); api_connector_data the response each record came from.
_EXTRA = {
    "websocket": ", batch_id, message_number, format",
    "rest": ", status_code, response_time_ms",
}


_DIRECT_COLUMNS = f"id, {_COLUMNS}"
_ENCODE = msgspec.json.Encoder().encode

# The small-batch insert: the records encoded by msgspec as one JSON array of objects
# (in C, ≈ 1 µs a record), taken apart by PostgreSQL. The raw payload arrives as base64
# (msgspec's encoding of bytes) and is decoded to the jsonb it is.
_RECORD_COLUMNS = (
    "connector_id text, exchange text, instrument text, price numeric, size numeric,"
    ' side text, message_type text, "timestamp" timestamptz, received_at timestamptz,'
    " data text, dedup_key text, bid_price numeric, bid_size numeric, ask_price numeric,"
    " ask_size numeric, source_id text, session_id text"
)
_EXTRA_TYPES = {
    "websocket": ", batch_id bigint, message_number bigint, format text",
    "rest": ", status_code integer, response_time_ms float8",
}
_DATA_FROM_BASE64 = " convert_from(decode(data, 'base64'), 'UTF8')::jsonb,"
_FROM_JSON = {
    source: (
        f"INSERT INTO {table} ({_COLUMNS}{_EXTRA[source]})"
        f" SELECT {_COLUMNS.replace(' data,', _DATA_FROM_BASE64)}"
        f"{_EXTRA[source]}"
        f" FROM json_to_recordset(%s::json) AS r({_RECORD_COLUMNS}{_EXTRA_TYPES[source]})"
        "{where} ON CONFLICT DO NOTHING RETURNING id, connector_id, dedup_key"
    )
    for source, table in TABLES.items()
}
_FROM_JSON_ALL = {source: text.format(where="").encode() for source, text in _FROM_JSON.items()}


def insert_records(
    conn: psycopg.Connection[Any], records: Sequence[Record], *, recover: bool = False
) -> tuple[list[StoredRecord], int]:
    """Insert ``records`` (all of one source kind) in the current transaction.

    Returns the records actually inserted, in id order, and how many were already stored
    (same connector and dedup key) and so skipped. With ``recover`` (a retry of a write
    whose outcome was unknown: the connection broke around its COMMIT), a skipped record
    that the lost attempt itself stored counts as stored, with its id, so it is still
    published (see :func:`stored_by_lost_attempt`).

    Duplicates are rare (a retry after a lost commit reply, a replay after reconnect), so
    the batch first goes straight into the table by COPY with ids taken from the
    sequence beforehand, inside a savepoint; only if that hits the unique index does it
    take the deduplicating path through the staging table.
    """
    if not records:
        return [], 0
    fresh, known = _unseen_rest_keys(conn, records)
    stored, duplicates = _insert(conn, fresh, _insert_once) if fresh else ([], 0)
    duplicates += known
    if recover:
        return with_lost_attempt(conn, records, stored, duplicates)
    return stored, duplicates


def _unseen_rest_keys(
    conn: psycopg.Connection[Any], records: Sequence[Record]
) -> tuple[Sequence[Record], int]:
    """``records`` less the REST records with a source id but no source time whose key a
    poll has already stored (``rest_record_keys``, see :mod:`.partitions`), and how many
    those were. The keys of the others are recorded in the same transaction."""
    if records[0].source != "rest":
        return records, 0
    timeless = [
        r
        for r in records
        if r.source_id is not None and r.connector_id is not None and r.timestamp == r.received_at
    ]
    if not timeless:
        return records, 0
    new = {
        (row[0], row[1])
        for row in conn.execute(
            "INSERT INTO rest_record_keys (connector_id, dedup_key)"
            " SELECT * FROM unnest(%s::text[], %s::text[]) ON CONFLICT DO NOTHING"
            " RETURNING connector_id, dedup_key",
            ([r.connector_id for r in timeless], [r.dedup_key for r in timeless]),
        )
    }
    seen = {id(r) for r in timeless if (r.connector_id, r.dedup_key) not in new}
    return [r for r in records if id(r) not in seen], len(seen)


def with_lost_attempt(
    conn: psycopg.Connection[Any],
    records: Sequence[Record],
    stored: list[StoredRecord],
    duplicates: int,
) -> tuple[list[StoredRecord], int]:
    """``stored`` and ``duplicates`` of an insert of ``records``, counting as stored the
    skipped records that a lost attempt stored (:func:`stored_by_lost_attempt`)."""
    if not duplicates:
        return stored, duplicates
    found = stored_by_lost_attempt(conn, records, stored)
    return sorted(stored + found, key=lambda s: s.id), duplicates - len(found)


def _insert(
    conn: psycopg.Connection[Any],
    records: Sequence[Record],
    once: Callable[[psycopg.Connection[Any], Sequence[Record]], T],
) -> T:
    """Insert (by ``once``); a record whose day has no partition yet (a backfill of old
    data, a source clock far off) fails the transaction with :class:`partitions.Missing`,
    naming the batch's days (the database layer creates them and runs the write again)."""
    try:
        return once(conn, records)
    except psycopg.errors.CheckViolation as exc:
        # A record without a time has no partition either: a data error, isolated by
        # the writer's split like any other (the column is NOT NULL).
        if not partitions.is_missing(exc) or any(r.timestamp is None for r in records):
            raise
        days = {partitions.day_of(r.timestamp) for r in records}
        raise partitions.Missing(TABLES[records[0].source], days) from exc


def _insert_once(
    conn: psycopg.Connection[Any], records: Sequence[Record]
) -> tuple[list[StoredRecord], int]:
    if len(records) <= SMALL_BATCH:
        with _allocating():
            return _insert_values(conn, records)
    with _allocating():
        ids = _take_ids(conn, len(records))
    try:
        with conn.transaction():
            _copy_direct(conn, ids, records)
    except psycopg.errors.UniqueViolation:
        return _insert_deduplicated(conn, records)
    # Positional, through map: 257 ns a record against 417 for the keyword comprehension
    # (5,000 per batch at max rate: ≈ 1.5% of the engine's CPU there).
    return list(map(StoredRecord, ids, records)), 0


# The ids as their bounds when they are consecutive (the usual case: another session's
# nextval between them, e.g. another instance's write, makes them not), else all of them.
_TAKE_IDS = (
    "SELECT min(v), max(v), CASE WHEN max(v) - min(v) + 1 = count(*) THEN NULL"
    " ELSE array_agg(v ORDER BY v) END"
    " FROM (SELECT nextval('record_id_seq') AS v FROM generate_series(1, %s)) AS taken"
)


def _take_ids(conn: psycopg.Connection[Any], n: int) -> list[int]:
    """``n`` new record ids, ascending, in one round trip.

    One row of bounds instead of ``n`` rows of one id: fetching the rows cost the engine
    4.0 ms of CPU per 5,000 ids (0.8 µs a record, ≈ 7% of max-1's engine CPU), the bounds
    0.3 ms; the statement's wall time, which the next batch waits for (:class:`IdTurn`),
    fell from 6.7 to 2.5 ms (``SELECT`` of 5,000 ids, 50 rounds, 2026-12-06)."""
    row = conn.execute(_TAKE_IDS, (n,)).fetchone()
    assert row is not None
    low, high, scattered = row
    return list(scattered) if scattered is not None else list(range(low, high + 1))


def _copy_direct(conn: psycopg.Connection[Any], ids: list[int], records: Sequence[Record]) -> None:
    """COPY the batch in text format, built as one buffer: about a third less client CPU
    per row than psycopg's binary rows, which convert every value through its dumper
    (measured in ``bench``, max-1). PostgreSQL parses numbers, times and JSON from their
    text, exactly (decimal digits stay digits; times carry their microseconds)."""
    source = records[0].source
    statement = f"COPY {TABLES[source]} ({_DIRECT_COLUMNS}{_EXTRA[source]}) FROM STDIN"
    with conn.cursor() as cur, cur.copy(statement.encode()) as copy:
        copy.write(copy_text(ids, records))


NULL = "\\N"  # COPY text format's NULL


def _escaped(value: str) -> str:
    if "\\" in value or "\n" in value or "\r" in value or "\t" in value:
        return (
            value.replace("\\", "\\\\")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
            .replace("\t", "\\t")
        )
    return value


def _text_or_null(value: str | None) -> str:
    return NULL if value is None else _escaped(value)


def copy_text(ids: list[int], records: Sequence[Record]) -> bytes:
    """The rows of ``records`` (with their ``ids``) in COPY's text format, in the column
    order of ``_DIRECT_COLUMNS`` and the table's extras. Strings a batch repeats
    (connector, exchange, instrument, side, type, session) and its times are converted
    once."""
    text = per_batch(_text_or_null)
    time_text = per_batch(datetime.isoformat)

    lines = []
    websocket = records[0].source == "websocket"
    last: Record | None = None
    head = kind = quote = tail = ""
    for id_, r in zip(ids, records, strict=True):
        # What consecutive records share is formatted once per change, not per record.
        if (
            last is None
            or r.connector_id != last.connector_id
            or r.exchange != last.exchange
            or r.instrument != last.instrument
        ):
            head = f"{text(r.connector_id)}\t{text(r.exchange)}\t{text(r.instrument)}"
        if last is None or r.side != last.side or r.message_type != last.message_type:
            kind = f"{text(r.side)}\t{text(r.message_type)}"
        if (
            last is None
            or r.bid_price != last.bid_price
            or r.bid_size != last.bid_size
            or r.ask_price != last.ask_price
            or r.ask_size != last.ask_size
        ):
            quote = (
                f"{r.bid_price or NULL}\t{r.bid_size or NULL}\t"
                f"{r.ask_price or NULL}\t{r.ask_size or NULL}"
            )
        if websocket:
            if (
                last is None
                or r.session_id != last.session_id
                or r.batch_id != last.batch_id
                or r.message_number != last.message_number
                or r.format != last.format
            ):
                tail = "\t".join(
                    (
                        text(r.session_id),
                        "\\N" if r.batch_id is None else str(r.batch_id),
                        "\\N" if r.message_number is None else str(r.message_number),
                        text(r.format),
                    )
                )
        else:
            tail = "\t".join(
                (
                    text(r.session_id),
                    "\\N" if r.status_code is None else str(r.status_code),
                    "\\N" if r.response_time_ms is None else repr(r.response_time_ms),
                )
            )
        last = r
        data = r.data.decode()
        if "\\" in data or "\n" in data or "\r" in data or "\t" in data:
            data = _escaped(data)
        source_id = r.source_id
        lines.append(
            f"{id_}\t{head}\t{r.price or NULL}\t{r.size or NULL}\t{kind}\t"
            f"{time_text(r.timestamp)}\t{time_text(r.received_at)}\t{data}\t"
            f"{_escaped(r.dedup_key)}\t{quote}\t"
            f"{NULL if source_id is None else _escaped(source_id)}\t{tail}"
        )
    lines.append("")
    return "\n".join(lines).encode()


def _insert_values(
    conn: psycopg.Connection[Any], records: Sequence[Record]
) -> tuple[list[StoredRecord], int]:
    """Up to a few hundred rows: one ``INSERT … SELECT FROM json_to_recordset(…) ON
    CONFLICT DO NOTHING RETURNING`` round trip, instead of COPY's several (the ids first,
    then the data, then the end).

    The batch is one parameter, the records as msgspec encodes them (in C), and the
    statement's text is the same for any number of rows. Round 1 sent a ``VALUES`` row
    per record, 20 parameters each: psycopg split every new query text in Python and
    dumped each value, 84 µs of client CPU per row at 30 rows, eight times COPY's, and
    what made ``bench`` connectors-200 cost 140 to 260 µs of engine CPU per record.

    Measured per row, client CPU / wall (the writer thread's time, PostgreSQL's included),
    embedded PostgreSQL, firehose records, best of three alternating rounds, 2026-12-06:

    ======  ==================  ==================
    rows    this                COPY (text)
    ======  ==================  ==================
    20      9.6 / 41 µs         20.4 / 53 µs
    37      5.2 / 28 µs         11.8 / 32 µs
    64      4.2 / 24 µs         8.5 / 23 µs
    128     3.4 / 21 µs         6.3 / 18 µs
    256     2.6 / 20 µs         4.8 / 14 µs
    512     2.5 / 19 µs         3.4 / 13 µs
    1024    2.3 / 19 µs         3.1 / 11 µs
    ======  ==================  ==================

    This way costs the engine half COPY's CPU at every size, but PostgreSQL parses the
    JSON, so from about 64 rows on a batch takes longer. The engine's interpreter is what
    many quiet feeds exhaust (connectors-200 commits 40-row batches, 260 a second), while
    a bulk load is bound by the database's time per row: up to 256 rows, where the saving
    is still ≈ 2 µs a row and the batch takes ≈ 1.5 ms longer, this way; COPY above.
    (The first threshold, 32, was chosen by wall time alone.) The whole statement is this
    batch's turn to take ids (:class:`IdTurn`), so two such batches do not overlap in
    PostgreSQL: self-limiting, since past ≈ 50,000 rows/s batches outgrow 256 rows and go
    by COPY, whose turn is only the ``nextval``."""
    statement = _FROM_JSON_ALL[records[0].source]
    rows = conn.execute(statement, (batch_json(records),)).fetchall()
    return returned(records, rows)


def batch_json(records: Sequence[Record]) -> str:
    """The small-batch insert's parameter: ``records`` as one JSON array of objects."""
    return _ENCODE(records).decode()


def can_commit_at_once(records: Sequence[Record]) -> bool:
    """Whether a statement of :func:`insert_from_json` can write ``records`` alone (see
    :func:`commit_at_once`): a small batch whose rows need nothing read before the
    insert (a REST record without a source time does: its key is checked first, see
    :func:`_unseen_rest_keys`)."""
    return len(records) <= SMALL_BATCH and not (
        records[0].source == "rest"
        and any(r.source_id is not None and r.timestamp == r.received_at for r in records)
    )


def insert_from_json(source: str, where: str) -> str:
    """The small-batch ``INSERT`` (see :func:`_insert_values`) of rows ``r`` for which
    ``where`` holds, returning ``id, connector_id, dedup_key``; its first parameter is the
    batch (:func:`batch_json`), those of ``where`` follow."""
    return _FROM_JSON[source].format(where=f" WHERE {where}")


def commit_at_once(
    conn: psycopg.Connection[Any],
    records: Sequence[Record],
    statement: bytes,
    params: Sequence[Any],
) -> list[tuple[Any, ...]]:
    """Run ``statement``, which inserts ``records``, as a transaction of its own: one
    round trip, committed by the server when it ends, instead of psycopg's ``BEGIN``,
    the statements and ``COMMIT`` each waited for. Returns its rows.

    Each wait ends in a worker thread that must take the interpreter back from an event
    loop busy with hundreds of sockets: up to the 5 ms switch interval, and ``bench``
    connectors-200 measured such hops at 5-14 ms at p99 (bench/README.md, fourth stop
    on #17). A fenced write of a small batch (``storage.cluster``) waited four times.
    (psycopg's pipeline mode does not get there: it waits for its ``BEGIN``, and again
    when the pipeline ends.)

    ``bench --only connectors-200``, four alternating pairs, 2026-12-06 (p99 ms, this
    way / statement by statement): 38 / 123, 61 / 54, 104 / 149, 69 / 102; engine CPU
    per record unchanged (83-95 µs either way)."""

    def once(conn: psycopg.Connection[Any], _: Sequence[Record]) -> list[tuple[Any, ...]]:
        conn.autocommit = True
        try:
            with _allocating():
                return conn.execute(statement, params).fetchall()
        finally:
            conn.autocommit = False

    return _insert(conn, records, once)


def _text_columns(r: Record, data: object) -> tuple[object, ...]:
    """A record's columns in table order, numbers as the source's text (PostgreSQL casts)."""
    return (
        r.connector_id,
        r.exchange,
        r.instrument,
        r.price,
        r.size,
        r.side,
        r.message_type,
        r.timestamp,
        r.received_at,
        data,
        r.dedup_key,
        r.bid_price,
        r.bid_size,
        r.ask_price,
        r.ask_size,
        r.source_id,
        r.session_id,
    )


def returned(
    records: Sequence[Record], inserted: list[tuple[Any, ...]]
) -> tuple[list[StoredRecord], int]:
    """``RETURNING id, connector_id, dedup_key`` rows → stored records in id order, and how
    many of ``records`` were skipped as already stored."""
    by_key = {(r.connector_id, r.dedup_key): r for r in records}
    stored = [StoredRecord(id=row[0], record=by_key[(row[1], row[2])]) for row in inserted]
    stored.sort(key=lambda s: s.id)
    return stored, len(records) - len(stored)


def _insert_deduplicated(
    conn: psycopg.Connection[Any], records: Sequence[Record]
) -> tuple[list[StoredRecord], int]:
    table = TABLES[records[0].source]
    with conn.cursor() as cur:
        with cur.copy(_COPY) as copy:
            copy.set_types(_COPY_TYPES)
            for ord_, r in enumerate(records):
                copy.write_row(
                    (
                        ord_,
                        *_text_columns(r, RawJsonb(r.data)),
                        r.batch_id,
                        r.status_code,
                        r.response_time_ms,
                        r.message_number,
                        r.format,
                    )
                )
        cur.execute(_INSERT.format(table=table, extra=_EXTRA[records[0].source]).encode())
        inserted = cur.fetchall()
    return returned(records, inserted)


# Each key is looked up with its partition key ("timestamp"), so one partition's unique
# index answers it.
_LOST_ATTEMPT = """
SELECT t.id, t.connector_id, t.dedup_key
FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[])
    AS k(connector_id, dedup_key, ts, received_at)
JOIN {table} t ON t.connector_id = k.connector_id AND t."timestamp" = k.ts
    AND t.dedup_key = k.dedup_key AND t.received_at = k.received_at
"""
_LOST_ATTEMPT_UNOWNED = """
SELECT t.id, t.connector_id, t.dedup_key
FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) AS k(dedup_key, ts, received_at)
JOIN {table} t ON t.connector_id IS NULL AND t.dedup_key = k.dedup_key AND t."timestamp" = k.ts
    AND t.received_at = k.received_at
"""


def stored_by_lost_attempt(
    conn: psycopg.Connection[Any], records: Sequence[Record], stored: list[StoredRecord]
) -> list[StoredRecord]:
    """The skipped ``records`` that are in the table as these very records: same key and
    the same receive time (to the microsecond). A record a source sent twice arrives at a
    different time, so a real duplicate is still skipped; the rows a lost COMMIT stored
    are this batch's own and are found."""
    inserted = {id(s.record) for s in stored}
    skipped = [r for r in records if id(r) not in inserted]
    table = TABLES[records[0].source]
    owned = [r for r in skipped if r.connector_id is not None]
    unowned = [r for r in skipped if r.connector_id is None]
    rows: list[tuple[Any, ...]] = []
    if owned:
        rows += conn.execute(
            _LOST_ATTEMPT.format(table=table).encode(),
            (
                [r.connector_id for r in owned],
                [r.dedup_key for r in owned],
                [r.timestamp for r in owned],
                [r.received_at for r in owned],
            ),
        ).fetchall()
    if unowned:
        rows += conn.execute(
            _LOST_ATTEMPT_UNOWNED.format(table=table).encode(),
            (
                [r.dedup_key for r in unowned],
                [r.timestamp for r in unowned],
                [r.received_at for r in unowned],
            ),
        ).fetchall()
    by_key = {(r.connector_id, r.dedup_key): r for r in skipped}
    return [StoredRecord(id=row[0], record=by_key[(row[1], row[2])]) for row in rows]


def newest_id(conn: psycopg.Connection[Any]) -> int:
    """The highest record id committed in either table (0 for none)."""
    row = conn.execute(
        "SELECT greatest((SELECT max(id) FROM websocket_messages),"
        " (SELECT max(id) FROM api_connector_data))"
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
