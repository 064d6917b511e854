"""Realtime that loses nothing across reconnects: ``/api/realtime?after_id=N``.

Every record a subscriber can see is in PostgreSQL, so a client that reconnects with the
last id it saw gets, in order, every matching record committed since, then the live
stream. The seam has no gap, no duplicate and no reordering: the subscription is
registered *before* the database is read, so whatever is published meanwhile is queued
live; the database is read only up to the last id published before the subscription (see
``Replay.upto``); records the read returned are skipped in the live queue by id (a record
is published once, so the skip list can be dropped once the overlap is over).

Positions: ids come from one sequence and each connector is written by one instance at a
time, so per connector ids follow commit order, also across a handover (the old owner is
fenced). Across instances they do not, so a resume on another instance is exact only
above ``after_id``: a third instance's record with an id at or below it that reaches this
instance after the client subscribed is sent live once more (dropping live ids at or
below the position would lose the ones the client never saw; ids are unique, so the
client drops it), and one that reached this instance before the client subscribed, but
the old instance after the client left, is missed. Closing that needs a commit-ordered
position (an LSN-like counter per commit), not the record id: a known gap.

A position at or below the retention floor (records deleted by retention) gets
``{"type": "resume_failed", "after_id", "oldest_available", "detail"}`` and the socket is
closed, never a silent jump; so is a position more than ``MAX_REPLAY`` records behind
(read those through ``GET /api/websocket/data``, then resume from its last id).
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import trio

from engine.hub import FRAME_RECORDS, Filter, Frames, batch_frame, encode_event
from engine.models import StoredRecord
from engine.storage import cluster as sql

PAGE = 2000
MAX_REPLAY = 100_000
OVERLAP_SECONDS = 10.0  # far beyond commit → publish latency: no later duplicate is possible


class ResumeFailed(Exception):
    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(frame["detail"])
        self.frame = frame


@attrs.define(eq=False)
class Replay:
    """One resuming subscriber's catch-up, and then its seam filter."""

    after_id: int
    #: The hub's ``published_id`` when the subscription was registered: the database is
    #: read up to it, never beyond. Two batches commit concurrently, so a read could see
    #: the later batch (higher ids) committed and not yet the earlier one; those records
    #: would then come live *after* higher ones (``test_resume`` caught it in CI). Above
    #: this id everything comes from the live queue, which is in publication order.
    upto: int | None = None
    replayed: set[int] = attrs.field(factory=set)
    last_id: int = 0
    _done_at: float | None = None

    async def run(self, db: Any, f: Filter, strings: bool, batch: bool, send: Any) -> None:
        """Send every matching committed record after ``after_id``; raise
        :class:`ResumeFailed` for a position that cannot be honoured."""
        position = self.after_id
        self.last_id = position
        while True:
            rows, floor = await db.run(
                sql.records_after,
                position,
                connector_id=f.connector_id,
                exchange=f.exchange,
                instrument=f.instrument,
                types=sorted(f.types) if f.types else None,
                limit=PAGE,
                upto=self.upto,
            )
            if self.after_id < floor:
                raise ResumeFailed(
                    {
                        "type": "resume_failed",
                        "after_id": self.after_id,
                        "oldest_available": floor,
                        "detail": "records after this position were deleted by retention",
                    }
                )
            texts = [
                encode_event(StoredRecord(row["id"], sql.record_from_row(row)), strings=strings)
                for row in rows
            ]
            if batch:
                for i in range(0, len(texts), FRAME_RECORDS):
                    await send(batch_frame(texts[i : i + FRAME_RECORDS]))
            else:
                for text in texts:
                    await send(text)
            self.replayed.update(row["id"] for row in rows)
            if rows:
                position = self.last_id = rows[-1]["id"]
            if len(self.replayed) > MAX_REPLAY:
                raise ResumeFailed(
                    {
                        "type": "resume_failed",
                        "after_id": self.after_id,
                        "oldest_available": self.last_id,
                        "detail": f"more than {MAX_REPLAY} records behind: read them from"
                        " /api/websocket/data, then resume from the last id",
                    }
                )
            if len(rows) < PAGE:
                break
        self._done_at = trio.current_time()
        await send(
            orjson.dumps(
                {
                    "type": "resumed",
                    "after_id": self.after_id,
                    "replayed": len(self.replayed),
                    "last_id": self.last_id,
                }
            ).decode()
        )

    def unseen(self, frames: Frames) -> Frames:
        """``frames`` without the records the catch-up already sent."""
        if not self.replayed:
            return frames
        if self._done_at is not None and trio.current_time() - self._done_at > OVERLAP_SECONDS:
            self.replayed.clear()
            return frames
        ids = getattr(frames, "ids", None)
        if not ids or not any(i in self.replayed for i in ids):
            return frames
        kept = [(i, text) for i, text in zip(ids, frames, strict=True) if i not in self.replayed]
        out = Frames(text for _, text in kept)
        out.ids = [i for i, _ in kept]
        return out
