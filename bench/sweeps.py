"""How cost grows: the same load measured at 1, 10, 100 and 1,000 connectors (a fixed total
rate spread over them), at 1, 10, 100 and 1,000 realtime subscribers, and at 1, 2 and 3
``sluice serve`` instances on one database (12 connectors spread over them, the subscriber
on the first, so two thirds of its records come relayed from the others), each point a
scenario of its own (``sweep-connectors-N``, ``sweep-subscribers-N``,
``sweep-instances-N``; ``--only sweep-connectors`` runs every point of one sweep). For
each point: committed/s, p99 latency and engine µs per record (all instances' CPU
together), drawn as SVG charts (matplotlib, in the ``bench`` extra) that RESULTS.md and
the README show, so a reader sees where the curve bends.

Every instance runs on this one 2-core machine, so the instances sweep shows what the
cluster *costs* (leases, fencing, the relay of records between instances), not how it
scales out: on separate hosts each instance would have its own cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .runner import Scenario

CHARTS = Path(__file__).parent / "charts"
POINTS = (1, 10, 100, 1000)
CONNECTORS_RATE = 10_000  # msg/s in total, spread over the connectors
SUBSCRIBERS_RATE = 2_000  # msg/s, every record to every subscriber
INSTANCES = (1, 2, 3)
INSTANCES_CONNECTORS = 12  # 12, 6 + 6, 4 + 4 + 4
INSTANCES_RATE = 12_000  # msg/s in total


def sweep_scenarios(full: bool) -> list[Scenario]:
    seconds = 20 if full else 6
    out = []
    for n in POINTS:
        rate = CONNECTORS_RATE / n
        out.append(
            Scenario(
                f"sweep-connectors-{n}",
                f"sweep: {n:,} connectors sharing {CONNECTORS_RATE:,} msg/s",
                max(1, int(rate * seconds)),
                rate=rate,
                connections=n,
            )
        )
    for n in POINTS:
        out.append(
            Scenario(
                f"sweep-subscribers-{n}",
                f"sweep: {n:,} subscribers at {SUBSCRIBERS_RATE:,} msg/s",
                SUBSCRIBERS_RATE * seconds,
                rate=SUBSCRIBERS_RATE,
                subscribers=n,
                max_lag=20_000,
            )
        )
    for n in INSTANCES:
        rate = INSTANCES_RATE / INSTANCES_CONNECTORS
        out.append(
            Scenario(
                f"sweep-instances-{n}",
                f"sweep: {n} instance(s) on one database, {INSTANCES_CONNECTORS} connectors"
                f" sharing {INSTANCES_RATE:,} msg/s",
                int(rate * seconds),
                rate=rate,
                connections=INSTANCES_CONNECTORS,
                instances=n,
            )
        )
    return out


def _sweeps(rows: list[tuple[Scenario, Any, dict[str, Any]]]) -> dict[str, list[tuple[int, Any]]]:
    found: dict[str, list[tuple[int, Any]]] = {}
    for scenario, _, r in rows:
        if scenario.key.startswith("sweep-"):
            name, _, n = scenario.key.rpartition("-")
            found.setdefault(name, []).append((int(n), r))
    return found


def draw(rows: list[tuple[Scenario, Any, dict[str, Any]]]) -> list[Path]:
    """One SVG per sweep: committed/s, p99 and engine µs per record against the count.
    Nothing if matplotlib (the ``bench`` extra) is missing."""
    try:
        import matplotlib

        matplotlib.use("svg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    CHARTS.mkdir(exist_ok=True)
    written = []
    for name, points in _sweeps(rows).items():
        points.sort(key=lambda p: int(p[0]))
        xs = [p[0] for p in points]
        figure, axes = plt.subplots(1, 3, figsize=(12, 3.4))
        series = (
            ("committed/s", [p[1]["committed_per_s"] for p in points]),
            ("p99 latency, ms", [p[1]["p99_ms"] for p in points]),
            ("engine µs CPU per record", [p[1]["engine_us_per_record"] for p in points]),
        )
        for ax, (label, ys) in zip(axes, series, strict=True):
            ax.plot(xs, ys, marker="o", color="#1f6feb")
            ax.set_xscale("log" if xs[-1] > 10 * xs[0] else "linear")
            ax.set_xticks(xs, [f"{x:,}" for x in xs])
            ax.set_xlabel(name.removeprefix("sweep-"))
            ax.set_title(label, fontsize=10)
            ax.grid(True, alpha=0.3)
            ax.set_ylim(bottom=0)
        figure.suptitle(name, fontsize=11)
        figure.tight_layout()
        path = CHARTS / f"{name}.svg"
        # A fixed hash salt and no date: the same numbers draw the same file.
        figure.savefig(path, metadata={"Date": None})
        plt.close(figure)
        written.append(path)
    return written


def section(rows: list[tuple[Scenario, Any, dict[str, Any]]]) -> list[str]:
    """RESULTS.md's sweep section: a table and the chart of each sweep."""
    lines: list[str] = []
    for name, points in _sweeps(rows).items():
        points.sort(key=lambda p: int(p[0]))
        lines += [
            f"### {name}\n",
            f"![{name}](charts/{name}.svg)\n",
            f"| {name.removeprefix('sweep-')} | committed/s | p99 ms | engine µs/record |"
            " peak RSS MiB |",
            "|---|---|---|---|---|",
        ]
        for n, r in points:
            lines.append(
                f"| {n:,} | {r['committed_per_s']:,.0f} | {r['p99_ms']:,.0f} "
                f"| {r['engine_us_per_record']:.1f} | {r['peak_rss_mib']:.0f} |"
            )
        lines.append("")
    return lines
