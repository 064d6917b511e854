"""Exponential backoff with full jitter, as a pure object that is told the time.

Like ``psycopg_pool``'s ``AttemptWithBackoff``: no clock and no sleeping inside, so the
policy is tested with plain numbers.
"""

from __future__ import annotations

import random

import attrs


@attrs.define
class Backoff:
    """Delays for successive retries: ``uniform(0, min(cap, base * factor**n))``.

    ``reset_after`` seconds of success (reported through :meth:`succeeded`) forget earlier
    failures, so a connection that was stable for a while starts again from ``base``.
    """

    base: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    reset_after: float = 60.0
    rng: random.Random = attrs.field(factory=random.Random)
    attempts: int = 0
    _stable_since: float | None = None

    def next_delay(self) -> float:
        """Count one failure and return how long to wait before the next try."""
        ceiling = min(self.cap, self.base * self.factor**self.attempts)
        self.attempts += 1
        self._stable_since = None
        return self.rng.uniform(0, ceiling)

    def succeeded(self, now: float) -> None:
        """Note that the operation is working at time ``now``."""
        if self._stable_since is None:
            self._stable_since = now
        elif now - self._stable_since >= self.reset_after:
            self.attempts = 0

    def reset(self) -> None:
        """Forget every earlier failure."""
        self.attempts = 0
        self._stable_since = None
