"""Many processes, one or many hosts, one PostgreSQL: the only shared part.

* :mod:`.quota` — how many connectors each live instance should run (pure).
* :mod:`.coordinator` — membership heartbeat, connector leases with epochs, and control
  (LISTEN/NOTIFY plus a periodic reconciliation), deciding what runs in this process.
* :mod:`.relay` — cluster-wide realtime: other instances' commits, read back by id and
  published to this instance's subscribers.

A single process is a cluster of one and takes the same path.
"""

from .coordinator import Coordinator, instance_name
from .relay import Relay

__all__ = ["Coordinator", "Relay", "instance_name"]
