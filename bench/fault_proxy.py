"""A small TCP fault proxy in Trio, between Sluice and PostgreSQL.

``cut()`` drops every open connection and refuses new ones (accepts, then closes at once,
like a server that is down) until ``restore()``. A cut that lands between a COMMIT and its
reply is exactly the "lost commit reply" case. ``stall()`` keeps every connection open but
forwards nothing, like a server frozen by a long lock or a full disk, until ``resume()``.
``lose_commit_reply()`` makes that case certain instead of likely: the next COMMIT of a
transaction that wrote records (it named ``websocket_messages`` or ``api_connector_data``),
or the next record ``INSERT`` that is a transaction of its own (sent outside a
transaction block: the storage's one-statement small writes), is forwarded, its reply is
swallowed once PostgreSQL has sent it (so the commit happened), and that connection is
cut.
The upstream may be TCP or the Unix socket of the embedded PostgreSQL. Loopback only.

Used by the outage tests in-process, and by the benchmark as its own process:
``python -m bench.fault_proxy DSN`` prints ``PORT <n>`` and then obeys ``stall``,
``resume``, ``cut`` and ``restore`` lines on standard input.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable

import attrs
import psycopg
import trio


@attrs.define(eq=False)
class FaultProxy:
    upstream_dsn: str
    port: int = 0
    down: bool = False
    cuts: int = 0
    #: Set by ``lose_commit_reply()``; cleared when a record COMMIT's reply was lost.
    losing_commit: bool = False
    commit_replies_lost: int = 0
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

    def lose_commit_reply(self) -> None:
        self.losing_commit = True

    async def _pump(
        self,
        source: trio.abc.Stream,
        sink: trio.abc.Stream,
        done: trio.CancelScope,
        swallow: Callable[[bytes], bool],
    ) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            while data := await source.receive_some(65536):
                await self._flowing.wait()
                if swallow(data):
                    break  # the reply to a record COMMIT: never delivered
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
                        watch = _CommitWatch(self)
                        async with trio.open_nursery() as nursery:
                            done = nursery.cancel_scope
                            pump = self._pump
                            nursery.start_soon(pump, client, upstream, done, watch.from_client)
                            nursery.start_soon(pump, upstream, client, done, watch.from_server)
                    finally:
                        self._scopes.discard(scope)


_COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"  # psycopg's COMMIT: a simple-query message
_RECORD_TABLES = (b"websocket_messages", b"api_connector_data")
_RECORD_INSERTS = tuple(b"INSERT INTO " + table for table in _RECORD_TABLES)
_READY = b"Z\x00\x00\x00\x05"  # ReadyForQuery, then the transaction status: I, T or E


@attrs.define(eq=False)
class _CommitWatch:
    """One connection's view for ``lose_commit_reply``: did the client just send the
    COMMIT of a transaction that wrote records? Then the next bytes from the server are
    its reply."""

    proxy: FaultProxy
    wrote_records: bool = False
    committing: bool = False
    #: Outside a transaction block, as the server's last ReadyForQuery said.
    idle: bool = True

    def from_client(self, data: bytes) -> bool:
        """Watched, never swallowed."""
        if any(table in data for table in _RECORD_TABLES):
            self.wrote_records = True
        alone = self.idle and any(insert in data for insert in _RECORD_INSERTS)
        if _COMMIT in data or alone:
            # Claimed here, at the COMMIT, not when its reply comes: with two writer
            # connections committing at once, both replies were swallowed (a flaky test).
            self.committing = self.proxy.losing_commit and self.wrote_records
            if self.committing:
                self.proxy.losing_commit = False
            self.wrote_records = False
        return False

    def from_server(self, data: bytes) -> bool:
        """True if ``data`` is a record COMMIT's reply, to be swallowed."""
        if (at := data.rfind(_READY)) >= 0 and at + 5 < len(data):
            self.idle = data[at + 5 : at + 6] == b"I"
        if not self.committing:
            return False
        self.committing = False
        self.proxy.commit_replies_lost += 1
        return True


async def _main(upstream_dsn: str) -> None:
    async with trio.open_nursery() as nursery:
        proxy: FaultProxy = await nursery.start(FaultProxy(upstream_dsn).run)
        print(f"PORT {proxy.port}", flush=True)
        commands = {
            "stall": proxy.stall,
            "resume": proxy.resume,
            "cut": proxy.cut,
            "restore": proxy.restore,
            "lose-commit-reply": proxy.lose_commit_reply,
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
