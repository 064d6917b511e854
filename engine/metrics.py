"""Tiny metric primitives and the Prometheus text exposition format.

Enough for Sluice's own metrics without a dependency: counters and gauges are plain
numbers read from actor statistics at scrape time; :class:`Histogram` keeps cumulative
bucket counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


class Histogram:
    """Cumulative-bucket histogram (Prometheus semantics: ``le`` upper bounds)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1


def _labels(labels: dict[str, str] | None) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


class Exposition:
    """Builds one scrape: each family once, with HELP and TYPE lines. ``base`` labels
    (the cluster instance) go on every sample, so series of several instances never
    collide in one Prometheus."""

    def __init__(self, base: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self.base = base or {}

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[dict[str, str] | None, float]],
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels({**self.base, **(labels or {})})} {_number(value)}")

    def histogram(self, name: str, help_text: str, hist: Histogram) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} histogram")
        cumulative = 0
        for bound, count in zip(hist.bounds, hist.counts, strict=False):
            cumulative += count
            bucket = _labels({**self.base, "le": _number(float(bound))})
            self.lines.append(f"{name}_bucket{bucket} {cumulative}")
        cumulative += hist.counts[-1]
        self.lines.append(f"{name}_bucket{_labels({**self.base, 'le': '+Inf'})} {cumulative}")
        base = _labels(self.base)
        self.lines.append(f"{name}_sum{base} {_number(float(hist.total))}")
        self.lines.append(f"{name}_count{base} {hist.count}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
