"""The spool directory: numbered append-only segment files of entries (``format``).

Blocking file I/O: callers run these methods in a worker thread (one at a time: the
replayer and the writer share one ``trio.Lock``). Segments are named by a growing number,
so their order is the order of the data. A segment is deleted only after every record in
it committed. The total size is bounded by ``max_bytes``: past it :meth:`append` raises
:class:`SpoolFull` and writes nothing (the caller counts a gap). ``fsync``: ``batch``
(default) syncs after every appended batch, so an acknowledged spool write survives a
power loss; ``never`` leaves it to the OS (a crash of the process still loses nothing; a
crash of the machine may lose the last seconds).

Error handling: a full disk (``OSError``) is :class:`SpoolFull` too; a segment whose tail
is torn or corrupt is read up to the damage, the rest counted and skipped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

from .format import ReadResult, encode_entry, read_entries

SUFFIX = ".spool"


class SpoolFull(Exception):
    """The spool cannot take this batch (its bound, or the disk, is full)."""


@attrs.define(eq=False)
class Spool:
    directory: Path
    max_bytes: int = 4 * 1024**3
    #: Segments are read whole on replay: 8 MiB keeps that read small beside the
    #: engine's memory bound, and frees disk soon after replay starts.
    segment_bytes: int = 8 * 1024**2
    fsync: str = "batch"
    bytes_used: int = 0
    entries_written: int = 0
    torn: int = 0
    corrupt: int = 0
    _current: Path | None = None
    _handle: object = None
    _next: int = 0
    _oldest_at: float | None = None

    def open(self) -> None:
        """Find the segments a previous run left (replayed first) and their size."""
        self.directory.mkdir(parents=True, exist_ok=True)
        segments = self.segments()
        self.bytes_used = sum(p.stat().st_size for p in segments)
        self._next = int(segments[-1].stem) + 1 if segments else 0
        if segments:
            self._oldest_at = segments[0].stat().st_mtime

    def segments(self) -> list[Path]:
        """Every segment, oldest first (the current one last)."""
        return sorted(self.directory.glob(f"*{SUFFIX}"), key=lambda p: int(p.stem))

    @property
    def empty(self) -> bool:
        return self.bytes_used == 0 and not self.segments()

    def append(self, payload: bytes) -> None:
        entry = encode_entry(payload)
        if self.bytes_used + len(entry) > self.max_bytes:
            raise SpoolFull(f"spool full ({self.bytes_used} of {self.max_bytes} bytes)")
        try:
            if self._handle is None or self._current_size() >= self.segment_bytes:
                self.rotate()
                self._current = self.directory / f"{self._next:012d}{SUFFIX}"
                self._next += 1
                self._handle = open(self._current, "ab")  # noqa: SIM115 - kept open
            f = self._handle
            f.write(entry)  # type: ignore[attr-defined]
            f.flush()  # type: ignore[attr-defined]
            if self.fsync == "batch":
                os.fsync(f.fileno())  # type: ignore[attr-defined]
        except OSError as exc:
            raise SpoolFull(f"cannot write the spool: {exc}") from exc
        self.bytes_used += len(entry)
        self.entries_written += 1
        if self._oldest_at is None:
            self._oldest_at = time.time()

    def _current_size(self) -> int:
        return self._current.stat().st_size if self._current is not None else 0

    def rotate(self) -> None:
        """Close the current segment, so the replayer may take it."""
        if self._handle is not None:
            self._handle.close()  # type: ignore[attr-defined]
            self._handle = None
            self._current = None

    def closed_segments(self) -> list[Path]:
        return [p for p in self.segments() if p != self._current]

    def read(self, segment: Path) -> Iterator[bytes]:
        result = ReadResult()
        with open(segment, "rb") as f:
            yield from read_entries(f, result)
        self.torn += result.torn
        self.corrupt += result.corrupt

    def delete(self, segment: Path) -> None:
        size = segment.stat().st_size
        segment.unlink()
        self.bytes_used = max(0, self.bytes_used - size)
        remaining = self.segments()
        self._oldest_at = remaining[0].stat().st_mtime if remaining else None

    def oldest_age(self) -> float | None:
        return None if self._oldest_at is None else max(0.0, time.time() - self._oldest_at)

    def close(self) -> None:
        self.rotate()
