"""A small TCP fault proxy in Trio, between Sluice and PostgreSQL.

``cut()`` drops every open connection and refuses new ones (accepts, then closes at once,
like a server that is down) until ``restore()``. A cut that lands between a COMMIT and its
reply is exactly the "lost commit reply" case. ``stall()`` keeps every connection open but
forwards nothing, like a server frozen by a long lock or a full disk, until ``resume()``.
The upstream may be TCP or the Unix socket of the embedded PostgreSQL. Loopback only.

Used by the outage tests in-process, and by the benchmark as its own process:
``python -m bench.fault_proxy DSN`` prints ``PORT <n>`` and then obeys ``stall``,
``resume``, ``cut`` and ``restore`` lines on standard input.
"""

from __future__ import annotations

import contextlib
import os
import sys

import attrs
import psycopg
import trio


@attrs.define(eq=False)
class FaultProxy:
    upstream_dsn: str
    port: int = 0
    down: bool = False
    cuts: int = 0
    _scopes: set[trio.CancelScope] = attrs.field(factory=set)
    _flowing: trio.Event = attrs.field(factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self._flowing.set()

    @property
    def dsn(self) -> str:
        """``upstream_dsn`` with its host and port replaced by the proxy's."""
        return psycopg.conninfo.make_conninfo(self.upstream_dsn, host="127.0.0.1", port=self.port)

    async def _open_upstream(self) -> trio.abc.Stream:
        info = psycopg.conninfo.conninfo_to_dict(self.upstream_dsn)
        host = str(info.get("host") or "127.0.0.1")
        port = int(info.get("port") or 5432)
        if host.startswith("/"):
            return await trio.open_unix_socket(f"{host}/.s.PGSQL.{port}")
        return await trio.open_tcp_stream(host, port)

    async def run(
        self, *, task_status: trio.TaskStatus[FaultProxy] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._handle, listeners)

    def cut(self) -> None:
        self.down = True
        self.cuts += 1
        for scope in list(self._scopes):
            scope.cancel()

    def restore(self) -> None:
        self.down = False

    def stall(self) -> None:
        self._flowing = trio.Event()

    def resume(self) -> None:
        self._flowing.set()

    async def _pump(
        self, source: trio.abc.Stream, sink: trio.abc.Stream, done: trio.CancelScope
    ) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            while data := await source.receive_some(65536):
                await self._flowing.wait()
                await sink.send_all(data)
        done.cancel()

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if self.down:
                return
            upstream = await self._open_upstream()
            async with upstream:
                with trio.CancelScope() as scope:
                    self._scopes.add(scope)
                    try:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
                            nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)
                    finally:
                        self._scopes.discard(scope)


async def _main(upstream_dsn: str) -> None:
    async with trio.open_nursery() as nursery:
        proxy: FaultProxy = await nursery.start(FaultProxy(upstream_dsn).run)
        print(f"PORT {proxy.port}", flush=True)
        commands = {
            "stall": proxy.stall,
            "resume": proxy.resume,
            "cut": proxy.cut,
            "restore": proxy.restore,
        }
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buffered = b""
        while data := await stdin.receive_some():
            buffered += data
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                if command := commands.get(line.decode().strip()):
                    command()
                    print(f"OK {line.decode().strip()}", flush=True)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(_main, sys.argv[1])
