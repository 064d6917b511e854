"""The restart loop, in virtual time."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from engine.backoff import Backoff
from engine.supervisor import Supervisor


class Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.starts: list[float] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.starts.append(trio.current_time())
        task_status.started()
        if len(self.starts) <= self.failures:
            raise RuntimeError(f"boom {len(self.starts)}")


def fixed_backoff() -> Backoff:
    backoff = Backoff(base=1.0, cap=1.0)
    backoff.rng.uniform = lambda a, b: b  # type: ignore[method-assign]
    return backoff


async def test_restarts_after_crashes_then_runs(autojump_clock: trio.testing.MockClock) -> None:
    actor = Flaky(failures=2)
    supervisor = Supervisor("flaky", actor.run, backoff=fixed_backoff())
    await supervisor.run()
    assert actor.starts == [0.0, 1.0, 2.0]
    assert supervisor.restarts == 2
    assert supervisor.state == "stopped"
    assert supervisor.last_error == "RuntimeError: boom 2"


async def test_gives_up_past_the_restart_budget(autojump_clock: trio.testing.MockClock) -> None:
    actor = Flaky(failures=100)
    supervisor = Supervisor(
        "flaky", actor.run, max_restarts=3, window=60.0, backoff=fixed_backoff()
    )
    await supervisor.run()
    assert supervisor.state == "error"
    assert len(actor.starts) == 4
    assert trio.current_time() == 3.0


async def test_escalates_when_asked(autojump_clock: trio.testing.MockClock) -> None:
    actor = Flaky(failures=100)
    supervisor = Supervisor(
        "core", actor.run, max_restarts=1, escalate=True, backoff=fixed_backoff()
    )
    with pytest.raises(ExceptionGroup) as info:
        await supervisor.run()
    assert info.group_contains(RuntimeError)


async def test_slow_crashes_stay_within_the_window(autojump_clock: trio.testing.MockClock) -> None:
    actor = Flaky(failures=5)
    backoff = Backoff(base=100.0, cap=100.0)
    backoff.rng.uniform = lambda a, b: b  # type: ignore[method-assign]
    supervisor = Supervisor("slow", actor.run, max_restarts=1, window=60.0, backoff=backoff)
    await supervisor.run()
    assert supervisor.state == "stopped"  # never 2 crashes within 60 s
    assert supervisor.restarts == 5
