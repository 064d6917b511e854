"""A small, explicit restart loop for actors.

An actor that raises is restarted after a jittered backoff, at most ``max_restarts`` times
within ``window`` seconds. Past that budget the supervisor gives up: it records the state
``error`` with the last failure, logs it, and either returns (``escalate=False``: a
connector's crash must not take down anything else) or re-raises (``escalate=True``: the
engine cannot work without this actor). Only ``Exception`` is caught: cancellation and
``KeyboardInterrupt`` always pass through.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from .backoff import Backoff

logger = logging.getLogger(__name__)

ActorRun = Callable[..., Awaitable[Any]]


@attrs.frozen
class SupervisorStatistics:
    name: str
    state: str
    restarts: int
    last_error: str | None


@attrs.define(eq=False)
class Supervisor:
    """Runs ``target(task_status=...)`` under a restart policy.

    ``task_status.started()`` is passed through from the first successful start, so
    ``await nursery.start(supervisor.run)`` returns when the actor is really ready.
    """

    name: str
    target: ActorRun
    max_restarts: int = 5
    window: float = 60.0
    escalate: bool = False
    backoff: Backoff = attrs.field(factory=lambda: Backoff(base=0.2, cap=10.0))
    state: str = "starting"
    restarts: int = 0
    last_error: str | None = None
    _recent: deque[float] = attrs.field(factory=deque)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        while True:
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.target, name=self.name)
                    self.state = "running"
                    if not started:
                        started = True
                        task_status.started()
                self.state = "stopped"
                return
            except Exception as exc:
                self.last_error = describe(exc)
                logger.exception("actor %s crashed", self.name)
                now = trio.current_time()
                self._recent.append(now)
                while self._recent and self._recent[0] < now - self.window:
                    self._recent.popleft()
                if len(self._recent) > self.max_restarts:
                    self.state = "error"
                    logger.error(
                        "actor %s crashed %d times in %g s; giving up",
                        self.name,
                        len(self._recent),
                        self.window,
                    )
                    if self.escalate:
                        raise
                    if not started:
                        task_status.started()
                    return
                self.state = "restarting"
                self.restarts += 1
            await trio.sleep(self.backoff.next_delay())

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(self.name, self.state, self.restarts, self.last_error)


def describe(exc: BaseException) -> str:
    """One line naming the leaf exceptions of ``exc`` (groups from nurseries unwrapped)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(sub) for sub in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"
