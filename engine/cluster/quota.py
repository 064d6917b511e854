"""Spreading connectors over live instances. Pure functions, tested without a database.

Every instance computes the same quotas from the same sorted list of live instances, so
they agree without talking: the counts differ by at most one, and when an instance joins
or leaves only the excess moves, never the rest.
"""

from __future__ import annotations

from collections.abc import Sequence


def quota(instances: Sequence[str], me: str, wanted: int) -> int:
    """How many of ``wanted`` connectors ``me`` should run (0 if it is not live)."""
    if me not in instances:
        return 0
    rank = sorted(instances).index(me)
    share, extra = divmod(wanted, len(instances))
    return share + (1 if rank < extra else 0)


def plan(
    owned: Sequence[str], wanted: Sequence[str], free: Sequence[str], target: int
) -> tuple[list[str], list[str]]:
    """What to release and what to try to acquire to reach ``target``.

    ``owned``: leases held; ``wanted``: connectors that should run, in a stable order;
    ``free``: wanted connectors nobody holds. Leases no longer wanted are released; past the
    target the last-wanted ones go; below it free ones are taken, first-wanted first.
    """
    position = {cid: i for i, cid in enumerate(wanted)}
    keep = sorted((c for c in owned if c in position), key=position.__getitem__)
    release = [c for c in owned if c not in position]
    if len(keep) > target:
        release += keep[target:]
        keep = keep[:target]
    held = set(owned)
    acquire = [c for c in free if c not in held][: max(0, target - len(keep))]
    return release, acquire
