"""The disk spool: where records go while PostgreSQL cannot take them.

* :mod:`.format` — entries (length, CRC-32, payload) in append-only segment files.
* :mod:`.codec` — a batch of records as one entry's payload, and back.
* :mod:`.spool` — the segment directory: append, rotate, read the oldest, delete.
* :mod:`.replayer` — the actor that writes spooled batches once the database is back.
"""

from .spool import Spool, SpoolFull

__all__ = ["Spool", "SpoolFull"]
