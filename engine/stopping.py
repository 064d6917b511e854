"""A stop request for actors that a supervisor may run more than once."""

from __future__ import annotations

import attrs
import trio


@attrs.define(eq=False)
class StopSwitch:
    """Remembers a stop request made before or during a run; each run gets a fresh cancel
    scope (a scope serves one ``with`` block), already cancelled if stop was requested."""

    requested: bool = False
    _scope: trio.CancelScope | None = None

    def request(self) -> None:
        self.requested = True
        if self._scope is not None:
            self._scope.cancel()

    def new_scope(self) -> trio.CancelScope:
        self._scope = trio.CancelScope()
        if self.requested:
            self._scope.cancel()
        return self._scope
