"""A conversion remembered for the length of one batch (its records share most of their
strings and times). Pure."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def per_batch(convert: Callable[[K], str]) -> Callable[[K], str]:
    """``convert``, each distinct value converted once. Make one per batch: it keeps every
    value it saw."""
    cache: dict[K, str] = {}
    get = cache.get

    # ``get`` rather than ``try``/``except KeyError``: a miss (most values of a batch
    # from many connectors, every time of a quiet feed) cost 0.61 µs that way and 0.35
    # this way, a hit 0.05 and 0.06 (timeit, 1,000 datetimes, 2026-12-06).
    def converted(value: K) -> str:
        out = get(value)
        if out is None:
            out = cache[value] = convert(value)
        return out

    return converted
