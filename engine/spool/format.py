"""Spool entries: ``length (u32 LE) | crc32 of payload (u32 LE) | payload``. Pure.

A crash can leave the last entry of a segment torn (short) and a bad disk can flip bits;
:func:`read_entries` stops at the first entry that is short or whose checksum does not
match, and says so, so replay never stores garbage and never stops the process.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import attrs

HEADER = struct.Struct("<II")
MAX_ENTRY = 256 * 1024 * 1024


def encode_entry(payload: bytes) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@attrs.define
class ReadResult:
    """What reading a segment found besides its good entries."""

    torn: int = 0  # a short last entry (a crash while writing it)
    corrupt: int = 0  # a checksum that does not match (the rest of the file is skipped)


def read_entries(f: BinaryIO, result: ReadResult) -> Iterator[bytes]:
    """Yield every intact entry from the current position; stop at the first bad one."""
    while True:
        header = f.read(HEADER.size)
        if not header:
            return
        if len(header) < HEADER.size:
            result.torn += 1
            return
        length, crc = HEADER.unpack(header)
        if length > MAX_ENTRY:
            result.corrupt += 1
            return
        payload = f.read(length)
        if len(payload) < length:
            result.torn += 1
            return
        if zlib.crc32(payload) != crc:
            result.corrupt += 1
            return
        yield payload
