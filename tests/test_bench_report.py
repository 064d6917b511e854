"""The bench report's verdicts, on made-up measurements (no run needed)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.__main__ import CPU_BEFORE, _cpu_target
from bench.runner import Scenario


def rows(**us: float) -> list[tuple[Scenario, None, dict[str, Any]]]:
    return [(Scenario(key, key), None, {"engine_us_per_record": v}) for key, v in us.items()]


@pytest.mark.parametrize(
    ("max1", "max10", "verdict"),
    [
        (CPU_BEFORE["max-1"] / 2, CPU_BEFORE["max-10"] / 2, "yes"),
        (6.4, 8.8, "**no**"),  # the run committed on 2026-12-06 20:31: max-10 at 0.57 of before
    ],
)
def test_the_half_cpu_target_holds_both_max_rate_scenarios(
    max1: float, max10: float, verdict: str
) -> None:
    [row] = _cpu_target(rows(**{"max-1": max1, "max-10": max10}))
    assert row.startswith("| max-rate engine CPU |")
    assert row.endswith(f"| {verdict} |")
    assert f"max-10 {max10:.1f} µs ({max10 / CPU_BEFORE['max-10']:.2f}" in row


def test_a_run_without_the_max_rate_scenarios_has_no_cpu_row() -> None:
    assert _cpu_target(rows(**{"paced-30k": 3.0})) == []
