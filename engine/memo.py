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

    def converted(value: K) -> str:
        try:
            return cache[value]
        except KeyError:
            out = cache[value] = convert(value)
            return out

    return converted
