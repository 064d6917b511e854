"""The disk spool on its own: entries survive a reopen, a torn or corrupt tail is
detected by its checksum and skipped with a count, the bound turns into SpoolFull (never
a full disk), and records come back exactly, digits and raw payload included."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.models import Record
from engine.spool import Spool, SpoolFull
from engine.spool.codec import decode_records, encode_records
from engine.spool.format import encode_entry


def record(i: int) -> Record:
    now = datetime(2026, 12, 4, 12, 0, i % 60, tzinfo=UTC)
    return Record(
        connector_id="conn_a",
        exchange="binance",
        instrument="BTCUSDT",
        price="50000.50",
        size="0.0100",
        side="buy",
        message_type="trade",
        timestamp=now,
        received_at=now,
        data=b'{"t":%d,"p":"50000.50","x":1.10}' % i,
        dedup_key=f"t:BTCUSDT:{i}",
        source_id=str(i),
        session_id="sess_1",
    )


def test_records_round_trip_exactly() -> None:
    batch = [record(i) for i in range(3)]
    assert decode_records(encode_records(batch)) == batch  # 1.10 stays 1.10 in the payload


def test_entries_survive_a_reopen_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=50)
    spool.open()
    for i in range(10):
        spool.append(b"entry %d" % i)
    spool.close()
    again = Spool(tmp_path)
    again.open()
    assert again.bytes_used == spool.bytes_used > 0
    got = [p for segment in again.segments() for p in again.read(segment)]
    assert got == [b"entry %d" % i for i in range(10)]
    assert len(again.segments()) > 1  # it rotated at the segment size


@pytest.mark.parametrize("damage", ["torn", "corrupt"])
def test_a_damaged_tail_is_skipped_and_counted(tmp_path: Path, damage: str) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append(b"first")
    spool.append(b"second")
    spool.close()
    [segment] = spool.segments()
    if damage == "torn":  # a crash in the middle of writing a third entry
        with open(segment, "ab") as f:
            f.write(encode_entry(b"third, never finished")[:9])
    else:  # a flipped byte in the second entry's payload
        raw = bytearray(segment.read_bytes())
        raw[-1] ^= 0xFF
        segment.write_bytes(bytes(raw))
    reader = Spool(tmp_path)
    reader.open()
    got = list(reader.read(segment))
    if damage == "torn":
        assert got == [b"first", b"second"]
        assert (reader.torn, reader.corrupt) == (1, 0)
    else:
        assert got == [b"first"]
        assert (reader.torn, reader.corrupt) == (0, 1)


def test_the_bound_is_a_clear_refusal_not_a_full_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    spool.open()
    spool.append(b"x" * 50)
    with pytest.raises(SpoolFull):
        spool.append(b"y" * 50)
    spool.close()
    assert spool.bytes_used <= 100  # nothing partial was written


def test_deleting_a_replayed_segment_frees_its_bytes(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=10)
    spool.open()
    spool.append(b"a" * 20)
    spool.append(b"b" * 20)
    spool.rotate()
    first, second = spool.segments()
    spool.delete(first)
    spool.close()
    assert spool.segments() == [second]
    assert spool.bytes_used == second.stat().st_size
