"""Trio instrumentation as a product feature: the live task tree, slow task steps,
event-loop lag and busy/idle time, cheap enough to stay on.

* A task step longer than ``slow_step`` (default 20 ms) blocked every other task; it is
  logged with the task's name (and its stack with ``SLUICE_TRIO_DEBUG=1``).
* Loop lag is how late a task that sleeps for 50 ms wakes up (:meth:`probe_lag`, run by
  the engine): a histogram. A per-task "scheduled" hook measured the same thing for
  every step but cost a tenth of the loop's time with hundreds of connectors. Each wake-up
  of a sleep costs Trio a deadline's expiry and a cancellation: at every 10 ms the probe
  was ≈ 2.5% of a core on an idle server (idle engine 6.0 to 7.1% of a core, 3.6 to 4.4% at
  50 ms, two 20 s samples each, 2026-12-06), as much as paced-30k's margin to its
  half-core target. The lag of each wake-up is measured as finely either way.
* Busy time is time spent in task steps; idle time is time waiting for I/O.
* Garbage-collector pauses: a histogram, and a pause longer than ``slow_step`` is logged
  like a slow step (it stops every task just the same).

The instrument only observes (``trio.abc.Instrument`` hooks); :func:`task_tree` reads the
tree from Trio's introspection API when asked.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

import trio

from .metrics import Histogram

logger = logging.getLogger(__name__)

LAG_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0)


class EngineInstrument(trio.abc.Instrument):
    def __init__(self, slow_step: float = 0.02, debug: bool = False) -> None:
        self.slow_step = slow_step
        self.debug = debug
        self.loop_lag = Histogram(LAG_BUCKETS)
        self.last_lag = 0.0  # seconds late, the latest wake-up of probe_lag
        self.busy_seconds = 0.0
        self.idle_seconds = 0.0
        self.slow_steps = 0
        self.tasks_spawned = 0
        self.tasks_exited = 0
        # Set now, not 0: the instrument may be added while a task step is running.
        self._step_started = time.perf_counter()
        self._idle_started = self._step_started
        self.gc_pauses = Histogram(LAG_BUCKETS)
        self._gc_started = 0.0

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        """A ``gc.callbacks`` hook: time every collection; a long one is a slow step too."""
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_started
        self.gc_pauses.observe(took)
        if took > self.slow_step:
            logger.warning(
                "slow task step: garbage collection (generation %d) took %.1f ms",
                info.get("generation", -1),
                took * 1000,
            )

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.tasks_spawned += 1

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.tasks_exited += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._step_started = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        took = time.perf_counter() - self._step_started
        self.busy_seconds += took
        if took > self.slow_step:
            self.slow_steps += 1
            if self.debug:
                stack = "".join(traceback.format_list(_await_stack(task)))
                logger.warning("slow task step: %s took %.1f ms\n%s", task.name, took * 1000, stack)
            else:
                logger.warning("slow task step: %s took %.1f ms", task.name, took * 1000)

    async def probe_lag(self, interval: float = 0.05) -> None:
        """Sleep ``interval`` again and again; record how late each wake-up is."""
        while True:
            due = trio.current_time() + interval
            await trio.sleep_until(due)
            self.last_lag = trio.current_time() - due
            self.loop_lag.observe(self.last_lag)

    def loop_statistics(self) -> dict[str, float]:
        """Event-loop health for a person: the latest and mean wake-up lag, slow steps."""
        lag = self.loop_lag
        return {
            "lag_ms_latest": round(1000 * self.last_lag, 3),
            "lag_ms_mean": round(1000 * lag.total / lag.count, 3) if lag.count else 0.0,
            "slow_steps": self.slow_steps,
        }

    def before_io_wait(self, timeout: float) -> None:
        self._idle_started = time.perf_counter()

    def after_io_wait(self, timeout: float) -> None:
        self.idle_seconds += time.perf_counter() - self._idle_started


def _await_stack(task: trio.lowlevel.Task) -> traceback.StackSummary:
    return traceback.StackSummary.extract(
        ((frame, lineno) for frame, lineno in task.iter_await_frames()), lookup_lines=False
    )


def _waiting_on(task: trio.lowlevel.Task) -> str | None:
    """The innermost await outside Trio's own internals, e.g. ``MemorySendChannel.send``."""
    frames = list(task.iter_await_frames())
    for frame, lineno in reversed(frames):
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("trio._core"):
            return f"{frame.f_code.co_qualname} ({module}:{lineno})"
    return None


def task_tree() -> dict[str, Any]:
    """The live task tree from the root: tasks, their nurseries, and what each awaits."""

    def describe(task: trio.lowlevel.Task) -> dict[str, Any]:
        return {
            "name": task.name,
            "waiting_on": _waiting_on(task),
            "nurseries": [
                [describe(child) for child in nursery.child_tasks]
                for nursery in task.child_nurseries
            ],
        }

    root = trio.lowlevel.current_root_task()
    assert root is not None  # called from inside trio.run
    return describe(root)


def render_tree(node: dict[str, Any]) -> list[str]:
    """The tree as text lines, the way ``sluice tasks`` prints it."""
    lines: list[str] = []

    def walk(item: dict[str, Any], lead: str, branch: str) -> None:
        waiting = f"  <- {item['waiting_on']}" if item.get("waiting_on") else ""
        lines.append(f"{lead}{branch}{item['name']}{waiting}")
        children = [child for nursery in item.get("nurseries", []) for child in nursery]
        below = lead + ("   " if branch == "└─ " else "│  " if branch else "")
        for i, child in enumerate(children):
            walk(child, below, "└─ " if i == len(children) - 1 else "├─ ")

    walk(node, "", "")
    return lines
