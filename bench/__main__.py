"""``python -m bench`` (``just bench``): measure Sluice against its ceilings and the naive
design on this machine, check the targets, print the tables and write ``bench/RESULTS.md``.

Short by default (a few minutes); ``--full`` runs the full sizes (about half an hour);
``--only KEY`` runs one scenario (keys: see ``--list``). Loopback traffic only.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import orjson

from . import store
from .cryptofeed_peer import cryptofeed_baseline
from .runner import (
    STORE_BATCH,
    Progress,
    Scenario,
    announce_cost,
    fanout_ceiling,
    finite,
    fresh_database,
    http_client_ceiling,
    machine,
    machine_speed,
    naive_baseline,
    normalize_cost,
    postgres,
    run_scenario,
    store_ceiling,
    transport_ceiling,
)
from .sweeps import draw as draw_sweeps
from .sweeps import section as sweep_section
from .sweeps import sweep_scenarios

RESULTS = Path(__file__).parent / "RESULTS.md"
RAW = Path(__file__).parent / "results.json"  # the measurements behind RESULTS.md
CORES = 2  # the project machine; the limit analysis says so when this one differs


@attrs.frozen
class Target:
    """``met`` answers True, False, or None when this run is too short to judge."""

    text: str
    met: Callable[[dict[str, Any], dict[str, float]], bool | None]


def scenarios(full: bool) -> list[tuple[Scenario, Target | None]]:
    """Every scenario of issue #6 with its target; short sizes unless ``full``."""
    seconds = 30 if full else 8
    n = 500_000 if full else 120_000
    return [
        (
            Scenario("max-1", "max rate, 1 connection, 1 subscriber (batch frames)", n),
            Target(
                "≥ 15× naive, ≥ 4× cryptofeed and ≥ 80,000 msg/s",
                lambda r, b: (
                    r["committed_per_s"]
                    >= max(15 * b["naive"], 4 * b.get("cryptofeed_msgs", 0), 80_000)
                    and r["received_min"] >= r["expected"]
                ),
            ),
        ),
        (
            Scenario(
                "max-10", "max rate, 1 connection, 10 subscribers (batch frames)", n, subscribers=10
            ),
            Target(
                "≥ 60,000 msg/s, every subscriber gets every record",
                lambda r, b: r["committed_per_s"] >= 60_000 and r["received_min"] >= r["expected"],
            ),
        ),
        (
            Scenario("max-okx", "max rate, 1 connection, OKX messages of 10 trades", n),
            None,
        ),
        (
            Scenario(
                "paced-10k-frames",
                "paced 10,000 msg/s, 1 subscriber, one record per frame",
                10_000 * seconds,
                rate=10_000,
                batch_frames=False,
            ),
            Target(
                "p99 ≤ 50 ms", lambda r, b: r["p99_ms"] <= 50 and r["received_min"] >= r["expected"]
            ),
        ),
        (
            Scenario(
                "paced-30k",
                "paced 30,000 msg/s, 1 subscriber (batch frames)",
                30_000 * seconds,
                rate=30_000,
            ),
            Target(
                "p99 ≤ 50 ms; engine ≤ 50% of one core",
                lambda r, b: r["p99_ms"] <= 50 and r["engine_cpu"] <= 0.5,
            ),
        ),
        (
            Scenario(
                "paced-30k-deflate",
                "paced 30,000 msg/s, 1 subscriber offering permessage-deflate (batch frames)",
                30_000 * seconds,
                rate=30_000,
                compression=True,
            ),
            None,
        ),
        (
            Scenario(
                "paced-60k",
                "paced 60,000 msg/s, 1 subscriber (batch frames)",
                60_000 * seconds,
                rate=60_000,
            ),
            None,
        ),
        (
            Scenario(
                "subscribers-1000",
                "1,000 subscribers (batch frames) at 2,000 msg/s",
                2_000 * seconds,
                rate=2_000,
                subscribers=1000,
                max_lag=20_000,  # the default: memory stays bounded if they fall behind
            ),
            Target(
                "every subscriber receives every record; p99 ≤ 250 ms",
                lambda r, b: r["received_min"] >= r["expected"] and r["p99_ms"] <= 250,
            ),
        ),
        (
            Scenario(
                "connectors-200",
                "200 WebSocket connectors × 50 msg/s, 1 subscriber (batch frames)",
                50 * seconds,
                rate=50,
                connections=200,
            ),
            Target(
                "all stored; p99 ≤ 100 ms",
                lambda r, b: r["rows_in_table"] == r["expected"] and r["p99_ms"] <= 100,
            ),
        ),
        (
            Scenario(
                "rest-1000",
                "1,000 REST connectors polling every second",
                subscribers=0,
                connections=0,
                rest_connectors=1000,
                duration=60 if full else 20,
            ),
            Target(
                "tick lateness p99 ≤ 20 ms; no skipped ticks",
                lambda r, b: r["tick_p99_ms"] <= 20 and r["skipped_ticks"] == 0,
            ),
        ),
        (
            Scenario(
                "stall-120s" if full else "stall-10s",
                f"PostgreSQL stalled for {120 if full else 10} s under 10,000 msg/s",
                10_000 * (120 if full else 10) + 10_000 * 20,
                rate=10_000,
                stall_at=5,
                stall_for=120 if full else 10,
            ),
            Target(
                "nothing lost, no gap; RSS ≤ 250 MiB; replay ≥ 3× the live rate",
                lambda r, b: (
                    r["rows_in_table"] == r["expected"]
                    and r["gaps"] == 0
                    and r["peak_rss_mib"] <= 250
                    and r.get("replay_ratio", 0) >= 3
                ),
            ),
        ),
        (
            Scenario(
                "soak-30k",
                f"steady 30,000 msg/s for {'5 minutes' if full else '60 s'}",
                30_000 * (300 if full else 60),
                rate=30_000,
                soak=True,
            ),
            Target(
                "RSS ≤ 200 MiB and flat",
                lambda r, b: _flat(r),
            ),
        ),
    ]


def everything(full: bool) -> list[tuple[Scenario, Target | None]]:
    """The scenarios with targets, then the sweeps' points (no targets: curves)."""
    return scenarios(full) + [(s, None) for s in sweep_scenarios(full)]


def _flat(r: dict[str, Any]) -> bool | None:
    """RSS ≤ 200 MiB, and flat: judged over five minutes (``--full``); a shorter soak's
    slope is mostly warm-up, so it only checks the ceiling."""
    if r["peak_rss_mib"] > 200:
        return False
    if r["seconds"] < 240:
        return None
    return abs(r["rss_slope_mib_per_min"]) < 2


def _verdict(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "not judged: needs `--full`"}[met]


def smoke() -> list[tuple[Scenario, Target | None]]:
    return [
        (Scenario("smoke-ws", "smoke: 500 trades, 2 subscribers", 500, subscribers=2), None),
        (
            Scenario(
                "smoke-okx",
                "smoke: OKX batches, per-record frames",
                300,
                exchange="okx",
                batch_frames=False,
            ),
            None,
        ),
        (
            Scenario(
                "smoke-rest",
                "smoke: 3 REST connectors",
                subscribers=0,
                connections=0,
                rest_connectors=3,
                duration=2.5,
            ),
            None,
        ),
        (
            Scenario(
                "smoke-stall", "smoke: 1 s stall", 2_000, rate=1_000, stall_at=0.5, stall_for=1
            ),
            None,
        ),
        (
            Scenario(
                "smoke-cluster",
                "smoke: 2 instances, 4 connectors",
                200,
                rate=200,
                connections=4,
                instances=2,
            ),
            None,
        ),
    ]


def fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and not finite(value)):
        return "–"
    return format(value, spec)


def _sweep_section(rows: list[tuple[Scenario, Target | None, dict[str, Any]]]) -> list[str]:
    lines = sweep_section(rows)
    if not lines:
        return []
    return [
        "## How cost grows (sweeps)\n",
        "Each point is a scenario of its own in this run (`bench/sweeps.py`); the charts are "
        "drawn by the bench (`bench/charts/`).\n",
        *lines,
    ]


def peer_baseline(admin: str, count: int) -> dict[str, float]:
    """cryptofeed on the same PostgreSQL server and the same count as the max-rate
    scenarios, or a note that the ``bench`` extra is missing."""
    try:
        import cryptofeed  # noqa: F401
    except ImportError:
        return {"cryptofeed_missing": 1.0}
    with fresh_database(admin) as dsn:
        return {f"cryptofeed_{k}": v for k, v in cryptofeed_baseline(dsn, count).items()}


def report(
    command: str,
    baselines: dict[str, float],
    rows: list[tuple[Scenario, Target | None, dict[str, Any]]],
    when: datetime | None = None,
) -> str:
    naive, store, transport = baselines["naive"], baselines["store"], baselines["transport"]
    lines = [
        "# Benchmark results\n",
        f"Generated by `{command}` on {when or datetime.now(UTC):%Y-%m-%d %H:%M} UTC — "
        f"{machine()}. "
        "Regenerated by the runner; do not edit by hand. The machine is shared and noisy: "
        "compare the ratios, which are measured in the same run. What each figure means and "
        "what limits the missed targets: `bench/README.md`.\n",
        "## Baselines measured in this run\n",
        "| baseline | rate |",
        "|---|---|",
        f"| naive design: asyncio, one INSERT + COMMIT per message | {naive:,.0f} msg/s |",
        f"| store ceiling: the writer's insert (text COPY) of the firehose's rows, "
        f"{STORE_BATCH:,} per batch (the writer's default), no network "
        f"| {store:,.0f} rows/s |",
        f"| transport ceiling: receive + parse only, no storage | {transport:,.0f} msg/s |",
    ]
    if "pk_only_rows_per_s" in baselines:
        pk = baselines["pk_only_rows_per_s"]

        def share(key: str) -> str:
            rate = baselines[f"{key}_rows_per_s"]
            return f"{rate:,.0f} rows/s ({100 * rate / pk:.0f}%)"

        lines.append(
            "| store by index set (`bench/store.py`: the firehose's rows over 20 instruments, "
            "COPY only, best of 3 alternating rounds): primary key only / + deduplication "
            "index / shipped (+ time index) / shipped + (exchange, instrument, time) / round "
            "1's table (unpartitioned, 4 B-trees and a BRIN) "
            f"| {pk:,.0f} rows/s / {share('dedup')} / {share('shipped')} / "
            f"{share('instrument')} / {share('round1')} |"
        )
    if "cryptofeed_msgs" in baselines:
        lines.append(
            f"| peer: cryptofeed 2.4.1 with its PostgreSQL backend, the same "
            f"{baselines['cryptofeed_count']:,.0f} firehose trades (combined-stream aggTrade) "
            f"into the same server, at full speed (`bench/cryptofeed_peer.py`) "
            f"| {baselines['cryptofeed_msgs']:,.0f} msg/s; {baselines['cryptofeed_us']:.1f} µs "
            f"CPU per message, PostgreSQL {baselines['cryptofeed_pg_us']:.1f} µs |"
        )
    elif "cryptofeed_missing" in baselines:
        lines.append(
            "| peer: cryptofeed | not measured: the `bench` extra is not installed "
            "(`just bench` installs it) |"
        )
    if "announce_plain_commits_per_s" in baselines:
        plain, notify = (
            baselines["announce_plain_commits_per_s"],
            baselines["announce_notify_commits_per_s"],
        )
        lines.append(
            f"| cluster: 500-record commits with / without the NOTIFY of their ids (a listener "
            f"connected) | {notify:,.0f} / {plain:,.0f} commits/s ({notify / plain:.2f}×) |"
        )
    if "normalize_known_us" in baselines:
        lines.append(
            f"| decode + normalize one Binance trade: through `binance` / through `custom` "
            f"(shape detection first; only sources of unknown exchange pay it) "
            f"| {baselines['normalize_known_us']:.2f} / {baselines['normalize_detected_us']:.2f}"
            " µs |"
        )
    if "http_cores" in baselines:
        lines.append(
            f"| HTTP client alone (httpx on Trio), {baselines['http_requests_per_s']:,.0f} "
            f"GET/s from one-second tickers, nothing stored | {baselines['http_cores']:.2f} "
            f"cores; tick lateness p99 {baselines['http_tick_p99_ms']:.0f} ms |"
        )
    if "fanout_p99_ms" in baselines:
        lines.append(
            f"| fan-out ceiling (`bench.fanout`: each frame's bytes built once and written to "
            f"every socket, no framework, no database), {baselines['fanout_megabytes_per_s']:,.0f}"
            f" MB/s to the subscribers | sender {baselines['fanout_sender_user']:.2f} cores "
            f"+ {baselines['fanout_sender_system']:.2f} in the kernel, subscribers "
            f"{baselines['fanout_subscribers_cpu']:.2f} cores; p99 "
            f"{baselines['fanout_p99_ms']:.0f} ms; slowest subscriber "
            f"{baselines['fanout_received_min']:,.0f}/{baselines['fanout_expected']:,.0f} |"
        )
    if "speed_factor" in baselines:
        lines.append(
            f"| this machine's speed now vs. when DESIGN.md's figures (and the targets) were "
            f"measured: Trio channel hops {baselines['speed_channel_hops']:,.0f}/s (then "
            f"185,000), thread round trips {baselines['speed_thread_trips']:,.0f}/s (then "
            f"12,700) | {baselines['speed_factor']:.2f}× |"
        )
    lines += [
        "",
        "## Targets\n",
        "| scenario | target | measured | met |",
        "|---|---|---|---|",
    ]
    for scenario, target, r in rows:
        if target is None:
            continue
        lines.append(
            f"| {scenario.key} | {target.text} | {_measured(r, baselines)} "
            f"| {_verdict(target.met(r, baselines))} |"
        )
    lines += _memory_target(rows)
    lines += _cpu_target(rows)
    lines += _store_targets(baselines)
    lines += [
        "",
        "## Scenarios\n",
        "Each: firehose process → `sluice serve` → PostgreSQL → subscriber processes. "
        "committed/s counts rows in the table; latency is firehose send → subscriber receipt; "
        "CPU is in cores (1.00 = one core busy) and µs of CPU per stored record.\n",
    ]
    lines += _sweep_section(rows)
    lines += _retention_section(baselines)
    for scenario, _, r in rows:
        if scenario.key.startswith("sweep-"):
            continue
        lines += [
            f"### {scenario.key}: {scenario.name}\n",
            f"`python -m bench --only {scenario.key}{' --full' if '--full' in command else ''}`\n",
            "| measure | value |",
            "|---|---|",
            f"| records stored / expected | {r['rows_in_table']:,} / {r['expected']:,} |"
            if not scenario.rest_connectors
            else f"| records stored | {r['rows_in_table']:,} |",
            f"| committed/s | {fmt(r['committed_per_s'])} "
            f"({r['committed_per_s'] / naive:.1f}× naive, "
            f"{100 * r['committed_per_s'] / store:.0f}% of store ceiling) |",
        ]
        if scenario.subscribers and r["expected"]:
            lines += [
                f"| subscribers / slowest received / closed early (lagged) | "
                f"{scenario.subscribers:,} / {r['received_min']:,} / {r['closed_early']:,} |",
                f"| delivered/s (slowest subscriber) | {fmt(r['delivered_per_s'])} |",
                f"| latency p50 / p90 / p99 / max ms | {fmt(r['p50_ms'], '.1f')} / "
                f"{fmt(r['p90_ms'], '.1f')} / {fmt(r['p99_ms'], '.1f')} / "
                f"{fmt(r['max_ms'], '.1f')} |",
            ]
            if finite(r.get("arrival_p99_ms", math.nan)):
                lines.append(
                    f"| of which before the engine read it (send → `received_at`) p50 / p99 ms "
                    f"| {fmt(r['arrival_p50_ms'], '.1f')} / {fmt(r['arrival_p99_ms'], '.1f')} |"
                )
        if scenario.rest_connectors:
            lines += [
                f"| ticks / requests / skipped ticks | {r['ticks']:,} / {r['requests']:,} / "
                f"{r['skipped_ticks']:,} |",
                f"| tick lateness p50 / p99 ms (bucket bound) | {fmt(r['tick_p50_ms'], '.0f')} / "
                f"{fmt(r['tick_p99_ms'], '.0f')} |",
            ]
        lines += [
            f"| CPU engine / PostgreSQL / firehose+subscribers | {r['engine_cpu']:.2f} / "
            f"{r['postgres_cpu']:.2f} / {r['load_cpu']:.2f} |",
            f"| µs CPU per record: engine / PostgreSQL / firehose+subscribers | "
            f"{r['engine_us_per_record']:.1f} / {r['postgres_us_per_record']:.1f} / "
            f"{r['load_us_per_record']:.1f} |",
            f"| peak RSS MiB | {r['peak_rss_mib']:.0f} |",
            f"| writer batches / mean size / flush p50, p99 ms (bucket bound) | "
            f"{r['batches']:,} / {r['rows_in_table'] / max(r['batches'], 1):,.0f} / "
            f"{fmt(r['flush_p50_ms'], '.0f')}, {fmt(r['flush_p99_ms'], '.0f')} |",
            f"| engine task steps over 20 ms (of them GC pauses) / slowest ms | "
            f"{r['slow_steps']} ({r['slow_gc']}) / {r['slowest_step_ms']:.0f} |",
        ]
        if "checkpoints" in r:  # runs before 2026-12-06 19:10 did not count them
            lines.append(
                f"| PostgreSQL checkpoints during the run (each scenario starts after one) | "
                f"{r['checkpoints']} |"
            )
        if r["rss_slope_mib_per_min"] is not None:
            lines.append(
                f"| RSS slope, second half (MiB/min) | {r['rss_slope_mib_per_min']:+.2f} |"
            )
        lines += [f"| gaps / rejected | {r['gaps']} / {r['rejected']} |", ""]
    lines += _limits(rows, baselines)
    return "\n".join(lines) + "\n"


def _memory_target(rows: list[tuple[Scenario, Target | None, dict[str, Any]]]) -> list[str]:
    """The target row for memory: peak RSS in every scenario of the run (sweep points
    included), with the highest and where it was."""
    peaks = [(r["peak_rss_mib"], s.key) for s, _, r in rows if finite(r.get("peak_rss_mib"))]
    if not peaks:
        return []
    peak, key = max(peaks)
    return [
        f"| every scenario | peak RSS ≤ 200 MiB | highest {peak:.0f} MiB ({key}; "
        f"{len(peaks)} scenarios) | {_verdict(peak <= 200)} |"
    ]


#: Engine µs of CPU per stored record in the RESULTS.md committed before issue #17's work
#: (the half-CPU target is at most half of these; bench/README.md "Half the CPU per record").
CPU_BEFORE = {"max-1": 14.0, "max-10": 15.5}


def _cpu_target(rows: list[tuple[Scenario, Target | None, dict[str, Any]]]) -> list[str]:
    """The target row for the engine's CPU per record on the max-rate scenarios."""
    measured = [
        (s.key, r["engine_us_per_record"])
        for s, _, r in rows
        if s.key in CPU_BEFORE and finite(r.get("engine_us_per_record"))
    ]
    if not measured:
        return []
    before = ", ".join(f"{key} {us:.1f}" for key, us in CPU_BEFORE.items())
    now = ", ".join(f"{key} {us:.1f} µs ({us / CPU_BEFORE[key]:.2f}×)" for key, us in measured)
    met = all(us <= 0.5 * CPU_BEFORE[key] for key, us in measured)
    return [
        f"| max-rate engine CPU | ≤ 0.5× the µs per record committed before issue #17 "
        f"({before}) | {now} | {_verdict(met)} |"
    ]


def _store_targets(b: dict[str, float]) -> list[str]:
    """Target rows measured by ``bench/store.py`` (baselines of this run)."""
    lines = []
    if "pk_only_rows_per_s" in b:
        ratio = b["shipped_rows_per_s"] / b["pk_only_rows_per_s"]
        lines.append(
            f"| store ceiling | the shipped table's ≥ 75% of a primary-key-only table's "
            f"| {100 * ratio:.0f}% ({b['shipped_rows_per_s']:,.0f} / "
            f"{b['pk_only_rows_per_s']:,.0f} rows/s) | {_verdict(ratio >= 0.75)} |"
        )
    if "retention_drop_s" in b:
        met = (
            bool(b["retention_dropped"])
            and b["retention_drop_s"] <= 5
            and _unaffected(b["retention_during_max_ms"], b["retention_before_max_ms"])
        )
        lines.append(
            f"| {_retention_key(b)} | partition drop of the rows ≤ 5 s, inserts unaffected "
            f"| {b['retention_rows']:,.0f} rows dropped in {b['retention_drop_s']:.2f} s; "
            f"slowest insert commit during it {b['retention_during_max_ms']:.0f} ms "
            f"(5 s before: p99 {b['retention_before_p99_ms']:.0f}, slowest "
            f"{b['retention_before_max_ms']:.0f} ms) | {_verdict(met)} |"
        )
    return lines


def _unaffected(during_max: float, before_max: float) -> bool:
    """Inserts unaffected: no commit during the drop slower than twice the slowest of the
    five seconds before (a noisy shared machine: same-run comparison, not a fixed bound)."""
    return finite(during_max) and during_max <= 2 * max(before_max, 10)


def _retention_key(b: dict[str, float]) -> str:
    return f"retention-{b['retention_rows'] / 1e6:.0f}M"


def _retention_section(b: dict[str, float]) -> list[str]:
    if "retention_drop_s" not in b:
        return []
    rows_per_s = b["retention_row_delete_rows_per_s"]
    files = b.get("retention_evicted_files")
    evicted = "no (data directory not readable here)"
    if files is None:
        evicted = "not measured"
    elif files:
        evicted = f"{files:.0f} files"
    return [
        f"### {_retention_key(b)}: retention drops an expired day under a "
        f"{1 / store.LOAD_INTERVAL * store.LOAD_BATCH:,.0f} records/s insert load\n",
        f"`python -m bench --only {_retention_key(b)}`\n",
        "| measure | value |",
        "|---|---|",
        f"| rows in the expired day (filled, indexed and attached in) | "
        f"{b['retention_rows']:,.0f} ({b['retention_fill_s']:.0f} s) |",
        f"| the day's files evicted from the OS page cache first, as thirty days unread "
        f"leave them (`bench/store.py:_evict`) | {evicted} |",
        f"| retention pass (detach concurrently + drop) | {b['retention_drop_s']:.2f} s |",
        f"| insert commits: 5 s before (p99 / slowest) | {b['retention_before_p99_ms']:.0f} / "
        f"{b['retention_before_max_ms']:.0f} ms |",
        f"| insert commits during the pass (count / slowest) | "
        f"{b['retention_during_commits']:.0f} / {b['retention_during_max_ms']:.0f} ms |",
        f"| round 1's way, bounded row deletes ({store.ROW_DELETE_ROWS:,} rows measured) | "
        f"{rows_per_s:,.0f} rows/s: {b['retention_rows'] / rows_per_s / 60:,.1f} min for "
        f"this day |",
        "",
    ]


def _measured(r: dict[str, Any], b: dict[str, float]) -> str:
    ratios = f"{r['committed_per_s'] / b['naive']:.1f}× naive"
    if b.get("cryptofeed_msgs") and r.get("max_rate"):
        ratios += f", {r['committed_per_s'] / b['cryptofeed_msgs']:.1f}× cryptofeed"
    parts = [f"{fmt(r['committed_per_s'])} msg/s ({ratios})"]
    if finite(r["p99_ms"]):
        parts.append(f"p99 {r['p99_ms']:.0f} ms")
    if r["expected"] and finite(r["p99_ms"]):
        parts.append(f"slowest subscriber {r['received_min']:,}/{r['expected']:,}")
    parts.append(f"engine {r['engine_cpu']:.2f} cores")
    if "tick_p99_ms" in r:
        parts = [f"tick p99 ≤ {fmt(r['tick_p99_ms'], '.0f')} ms", f"{r['skipped_ticks']} skipped"]
    if r["rss_slope_mib_per_min"] is not None:
        parts.append(
            f"RSS peak {r['peak_rss_mib']:.0f} MiB, {r['rss_slope_mib_per_min']:+.2f} MiB/min"
        )
    elif "stall" in r["key"]:
        parts.append(
            f"RSS peak {r['peak_rss_mib']:.0f} MiB, "
            f"{r['rows_in_table']:,}/{r['expected']:,} stored, {r['gaps']} gaps"
        )
        if "catch_up_seconds" in r:
            parts.append(
                f"{r['spooled']:,} spooled, caught up {r['catch_up_seconds']:.1f} s after the"
                f" stall, replay {r['replay_per_s']:,.0f}/s ({r['replay_ratio']:.1f}× live)"
            )
    return "; ".join(parts)


def _limits(
    rows: list[tuple[Scenario, Target | None, dict[str, Any]]], baselines: dict[str, float]
) -> list[str]:
    """For every missed target, the measurements of this run that say what limits it.
    (bench/README.md explains them and what was changed because of them.)"""
    if all(t is None for _, t, _ in rows):
        return []
    lines = ["## What limits the missed targets (measured in this run)\n"]
    missed = [(s, r) for s, t, r in rows if t is not None and t.met(r, baselines) is False]
    if not missed:
        return [*lines, "Every target was met.\n"]
    for scenario, r in missed:
        lines.append(f"* **{scenario.key}**: {_limit(scenario, r, baselines)}")
    return [*lines, ""]


def _limit(scenario: Scenario, r: dict[str, Any], b: dict[str, float]) -> str:
    engine, pg, load = (
        r["engine_us_per_record"],
        r["postgres_us_per_record"],
        r["load_us_per_record"],
    )
    per = engine + pg + load
    cpu = (
        f"engine {r['engine_cpu']:.2f} cores, PostgreSQL {r['postgres_cpu']:.2f}, "
        f"load generators {r['load_cpu']:.2f} of {CORES}"
    )
    if scenario.rate == 0:
        idle = CORES - r["engine_cpu"] - r["postgres_cpu"] - r["load_cpu"]
        return (
            f"CPU, and waiting. Each stored record cost {engine:.1f} µs of engine CPU, "
            f"{pg:.1f} µs of PostgreSQL and {load:.1f} µs in the firehose and subscribers "
            f"({per:.1f} µs in all): {CORES} cores cap this machine at "
            f"≈ {CORES * 1e6 / per:,.0f} msg/s with every core busy and nothing waiting, and "
            f"the engine — one Python process, one interpreter lock — at "
            f"≈ {1e6 / engine:,.0f} msg/s. Measured: {cpu}, so {max(idle, 0):.2f} cores "
            f"stood idle: the engine's threads take turns on the interpreter lock and "
            f"hand each batch to PostgreSQL and wait for its commit (two at a time)." + _speed(r, b)
        )
    if scenario.subscribers >= 100:
        deliveries = scenario.rate * scenario.subscribers
        text = (
            f"fan-out. {deliveries:,.0f} record deliveries/s were needed; the hub writes each "
            f"batch frame's shared bytes to every subscriber's socket (through hypercorn's "
            f"WebSocket stack only for one that is behind). Measured: {cpu}; "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB; p50 {r['p50_ms']:.0f} ms."
        )
        if "fanout_p99_ms" in b:
            sender = b["fanout_sender_user"] + b["fanout_sender_system"]
            text += (
                f" The fan-out ceiling at the same load (baselines) needed {sender:.2f} cores "
                f"to send and {b['fanout_subscribers_cpu']:.2f} to receive, "
                f"{sender + b['fanout_subscribers_cpu']:.2f} of {CORES}, for p99 "
                f"{b['fanout_p99_ms']:.0f} ms: the engine would have to fan out within "
                f"≈ {max(CORES - b['fanout_subscribers_cpu'] - r['postgres_cpu'], 0):.2f} "
                f"cores, as cheaply as that bare sender, while also ingesting and storing."
            )
        return text
    if not scenario.batch_frames:
        return (
            f"one WebSocket send per record through Quart and hypercorn: {engine:.0f} µs of "
            f"engine CPU per record here (batch frames: ≈ 15–20 µs); {cpu}; latency p50 "
            f"{r['p50_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms."
        )
    if scenario.rest_connectors:
        return (
            f"tick lateness p99 ≤ {r['tick_p99_ms']:.0f} ms (bucket bound), "
            f"{r['skipped_ticks']} skipped; {cpu}; {r['slow_steps']} task steps over 20 ms "
            f"({r['slow_gc']} GC pauses), slowest {r['slowest_step_ms']:.0f} ms."
        )
    return (
        f"{cpu} ({engine:.1f} µs engine CPU per record); latency p50 {r['p50_ms']:.1f} ms, "
        f"p99 {r['p99_ms']:.1f} ms; database flush p99 ≤ {r['flush_p99_ms']:.0f} ms (bucket "
        f"bound); {r['slow_steps']} task steps over 20 ms ({r['slow_gc']} GC pauses)."
    )


def _speed(r: dict[str, Any], b: dict[str, float]) -> str:
    factor = b.get("speed_factor", float("nan"))
    if not finite(factor):
        return ""
    return (
        f" This machine ran at ≈ {factor:.2f}× the speed it had when DESIGN.md's figures "
        f"were measured (baselines); the same CPU per record at that speed would be "
        f"≈ {r['committed_per_s'] / factor:,.0f} msg/s — context only, the target stands."
    )


def rerender(raw: dict[str, Any]) -> str:
    """RESULTS.md again from saved measurements (after the report's wording changed)."""
    plan = {s.key: (s, t) for s, t in everything("--full" in raw["command"])}
    nan = float("nan")
    rows = [
        (
            *plan[row["key"]],
            {k: nan if v is None and k != "rss_slope_mib_per_min" else v for k, v in row.items()},
        )
        for row in raw["rows"]
        if row["key"] in plan
    ]
    baselines = {k: nan if v is None else v for k, v in raw["baselines"].items()}
    return report(raw["command"], baselines, rows, datetime.fromisoformat(raw["generated"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--full", action="store_true", help="full sizes (about half an hour)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    parser.add_argument("--only", action="append", metavar="KEY", help="run only this scenario")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite RESULTS.md")
    parser.add_argument(
        "--profile", metavar="DIR", help="record a py-spy flame graph of the engine per scenario"
    )
    parser.add_argument(
        "--raw-profile",
        action="store_true",
        help="with --profile: collapsed stacks (.txt) instead of flame graphs, for reading",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="only rewrite RESULTS.md from the measurements of the last run (results.json)",
    )
    args = parser.parse_args(argv)
    if args.report:
        RESULTS.write_text(rerender(orjson.loads(RAW.read_bytes())))
        print(RESULTS.read_text())
        return 0
    plan = smoke() if args.smoke else everything(args.full)
    # retention-50M (5M in a short run) is measured by bench/store.py, not a firehose run.
    retention_rows = 0 if args.smoke else (50_000_000 if args.full else 5_000_000)
    retention_key = f"retention-{retention_rows // 1_000_000}M"
    if args.list:
        for scenario, target in plan:
            print(
                f"{scenario.key:18} {scenario.name}"
                + (f"  [target: {target.text}]" if target else "")
            )
        if retention_rows:
            print(f"{retention_key:18} retention drops an expired day of {retention_rows:,} rows")
        return 0
    if args.only:
        # A sweep's name selects all its points.
        def chosen(key: str) -> bool:
            return key in args.only or key.rpartition("-")[0] in args.only

        known = {s.key for s, _ in plan} | {s.key.rpartition("-")[0] for s, _ in plan}
        known.add(retention_key)
        unknown = set(args.only) - known
        if unknown:
            parser.error(f"unknown scenario {sorted(unknown)[0]} (see --list)")
        plan = [(s, t) for s, t in plan if chosen(s.key)]
    n = 2_000 if args.smoke else (200_000 if args.full else 60_000)
    progress = Progress()
    rows = []
    with postgres() as admin:
        progress.done("baselines: naive design, store ceiling, transport ceiling …")
        with fresh_database(admin) as dsn:
            baselines = {
                "naive": naive_baseline(dsn, 300 if args.smoke else 3_000),
                "store": store_ceiling(dsn, n),
            }
            baselines.update({f"announce_{k}": v for k, v in announce_cost(dsn, n).items()})
            progress.done("baseline: the store by index set …")
            baselines.update(store.index_costs(dsn, n))
        baselines["transport"] = transport_ceiling(n)
        peer_count = max((s.count for s, _ in plan if not s.rate and s.count), default=0)
        if peer_count:
            progress.done(f"baseline: cryptofeed, {peer_count:,} firehose trades …")
            baselines.update(peer_baseline(admin, peer_count))
        baselines.update({f"normalize_{k}": v for k, v in normalize_cost().items()})
        baselines.update({f"speed_{k}": v for k, v in machine_speed().items()})
        fans = [s for s, _ in plan if s.subscribers >= 100]
        if fans:
            progress.done("baseline: the fan-out ceiling at the subscriber scenario's load …")
            fan = fanout_ceiling(fans[0].subscribers, fans[0].rate, fans[0].count)
            baselines.update({f"fanout_{k}": v for k, v in fan.items()})
        rest = [s for s, _ in plan if s.rest_connectors]
        if rest:
            progress.done("baseline: the HTTP client alone at the REST scenario's load …")
            http = http_client_ceiling(rest[0].rest_connectors, 3 if args.smoke else 15)
            baselines.update({f"http_{k}": v for k, v in http.items()})
        if retention_rows and (not args.only or retention_key in args.only):
            progress.done(f"{retention_key}: filling an expired day …")
            result = store.retention_drop(admin, retention_rows)
            baselines.update({f"retention_{k}": v for k, v in result.items()})
        for scenario, target in plan:
            suffix = "txt" if args.raw_profile else "svg"
            profile = f"{args.profile}/{scenario.key}.{suffix}" if args.profile else None
            rows.append((scenario, target, run_scenario(admin, scenario, progress, profile)))
    command = (
        "python -m bench" + (" --full" if args.full else "") + (" --smoke" if args.smoke else "")
    )
    if args.only:
        command += "".join(f" --only {key}" for key in args.only)
    if not args.smoke:
        for chart in draw_sweeps(rows):
            progress.done(f"chart: {chart}")
    text = report(command, baselines, rows)
    print(text)
    if not (args.smoke or args.no_write or args.only):
        RESULTS.write_text(text)
        RAW.write_bytes(
            orjson.dumps(
                {
                    "command": command,
                    "generated": datetime.now(UTC).isoformat(),
                    "baselines": baselines,
                    "rows": [{"key": s.key, **r} for s, _, r in rows],
                },
                option=orjson.OPT_INDENT_2,
            )
        )
    lost = [
        r["key"]
        for _, _, r in rows
        if (r["expected"] and r["rows_in_table"] != r["expected"]) or r["gaps"] or r["rejected"]
    ]
    if lost:
        print(f"records lost, gapped or rejected in: {', '.join(lost)}", file=sys.stderr)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
