"""The one door to PostgreSQL: a psycopg connection pool driven from worker threads.

psycopg's async API is asyncio-only, so Trio code calls its sync API through
``trio.to_thread.run_sync``, one hop per call (never per row), limited by a
``CapacityLimiter`` as large as the pool. No other module touches threads or SQL.

Error handling: connection failures and pool timeouts become
:class:`~engine.errors.SinkUnavailable` (retry); data the server refuses becomes
:class:`~engine.errors.BadMessage` with category ``db_rejected`` (isolate and count);
anything else propagates as a bug.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import date
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
import psycopg.types.json
import psycopg_pool
import trio
from psycopg import pq, sql
from psycopg.adapt import Dumper
from psycopg.rows import dict_row

from ..config import Settings
from ..errors import BadMessage, ConfigurationError, SinkUnavailable
from . import migrations, partitions
from .embedded import embedded_postgres, ensure_database
from .staging import STAGING_DDL

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")
Conn = psycopg.Connection[Any]

JSONB_OID = 3802
SINK_WAIT = 2.0


class RawJsonb(bytes):
    """JSON text, already encoded, to be stored in a ``jsonb`` column as the object it is."""


class _RawJsonbBinaryDumper(Dumper):
    # Binary jsonb is a version byte (1) followed by the JSON text; sending that avoids
    # both re-encoding and binary COPY's default of storing a str as a JSON *string*.
    format = pq.Format.BINARY
    oid = JSONB_OID

    def dump(self, obj: Any) -> bytes:
        return b"\x01" + bytes(obj)


_I64 = 2**63


def _json_int(text: str) -> int | float:
    # jsonb keeps numbers as numeric and writes 1e191 as 192 digits; beyond 64 bits an
    # integer becomes a float again, as the client sent it (orjson writes no bigger int).
    value = int(text)
    return value if -_I64 <= value < 2 * _I64 else float(value)


def _json_loads(data: str | bytes) -> Any:
    return json.loads(data, parse_int=_json_int)


def _configure(conn: Conn) -> None:
    conn.adapters.register_dumper(RawJsonb, _RawJsonbBinaryDumper)
    psycopg.types.json.set_json_loads(_json_loads, conn)
    # The records module's staging table lives for the session; create it once.
    conn.execute(STAGING_DDL)
    conn.commit()


# Errors that mean "this data cannot be stored", as opposed to "the server is not there".
_DATA_ERRORS = (
    psycopg.errors.DataError,
    psycopg.errors.IntegrityError,
    psycopg.errors.ProgramLimitExceeded,
)


class Database:
    """A pool of connections and the thread hop to use it.

    Resource handling: create it with :meth:`open`, an async context manager that starts
    the embedded server if needed, opens the pool, applies migrations, and on exit closes
    the pool and stops the embedded server.
    """

    def __init__(self, dsn: str, settings: Settings) -> None:
        self.dsn = dsn
        self.embedded = settings.embedded
        self._pool = psycopg_pool.ConnectionPool(
            dsn,
            min_size=settings.pool_min,
            max_size=max(settings.pool_max, settings.pool_min),
            timeout=settings.pool_timeout,
            configure=_configure,
            open=False,
            name="sluice",
        )
        self._limiter = trio.CapacityLimiter(max(settings.pool_max, settings.pool_min))
        self._pool_timeout = settings.pool_timeout
        self._write_timeout = settings.write_timeout
        #: Days known to have a partition, per record table (see :meth:`ensure_days`).
        self.partition_days: dict[str, set[date]] = {t: set() for t in partitions.RECORD_TABLES}

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: Settings, *, migrate: bool = True) -> AsyncIterator[Database]:
        async with contextlib.AsyncExitStack() as stack:
            dsn = settings.postgres_dsn
            if dsn is None:
                embedded = embedded_postgres(settings.data_dir)
                dsn = await trio.to_thread.run_sync(embedded.__enter__)
                stack.push_async_callback(
                    trio.to_thread.run_sync, embedded.__exit__, None, None, None
                )
            else:
                await trio.to_thread.run_sync(_create_database_if_missing, dsn)
            db = cls(dsn, settings)
            await db._open_pool(settings.pool_timeout)
            stack.push_async_callback(db._close_pool)
            if migrate:
                done = await db.run(migrations.migrate, move_batch=settings.migrate_batch)
                if done.applied:
                    logger.info("database schema at version %d", done.applied[-1])
                await db.refresh_days()
            yield db

    async def _open_pool(self, wait_seconds: float) -> None:
        try:
            await trio.to_thread.run_sync(lambda: self._pool.open(wait=True, timeout=wait_seconds))
        except psycopg_pool.PoolTimeout as exc:
            await trio.to_thread.run_sync(self._pool.close)
            raise ConfigurationError(
                f"cannot connect to PostgreSQL at {_safe_dsn(self.dsn)} within {wait_seconds:g} s"
            ) from exc

    async def _close_pool(self) -> None:
        with trio.move_on_after(10, shield=True):
            await trio.to_thread.run_sync(self._pool.close, 5.0)

    async def refresh_days(self) -> None:
        """Read which days have partitions (after a start, a retention pass)."""
        for table in partitions.RECORD_TABLES:
            days = await self.run(partitions.attached, table)
            self.partition_days[table] = set(days.values())

    async def ensure_days(self, table: str, days: set[date]) -> None:
        """Create the partitions of ``days`` that this process does not know to exist, in
        a short transaction of its own, before a write needs them: a write that found one
        missing would roll back and take new record ids when run again, after a batch
        written meanwhile (ids would stop following commit order). Raises
        :class:`SinkUnavailable` like a write."""
        missing = days - self.partition_days[table]
        if missing:
            await self.sink(partitions.create, table, missing)
            self.partition_days[table] |= missing

    async def run(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kw: P.kwargs) -> T:
        """Call ``fn(conn, *args)`` in a worker thread with a pooled connection, inside one
        transaction (committed when ``fn`` returns, rolled back if it raises)."""
        return await self._call(self._pool_timeout, False, lambda conn: fn(conn, *args, **kw))

    async def sink(self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kw: P.kwargs) -> T:
        """Like :meth:`run`, for writers that retry: waits at most ``SINK_WAIT`` for a
        pooled connection, then tries a fresh one of its own. The pool reconnects with a
        growing backoff after an outage; a writer must not wait for that to commit again.

        A call that has not returned within ``write_timeout`` (a database that stalls: a
        frozen server, a network that drops packets without a reset) is
        :class:`SinkUnavailable` like a refused connection, so the writer spools instead of
        waiting for ever. Its thread is abandoned, still holding its limiter token until it
        returns, so stalled calls cannot pile up past the pool's size; whether it committed
        is unknown, which the writer treats as a lost commit reply.
        """
        call = lambda conn: fn(conn, *args, **kw)  # noqa: E731
        try:
            with trio.fail_after(self._write_timeout):
                return await self._call(min(self._pool_timeout, SINK_WAIT), True, call, True)
        except trio.TooSlowError as exc:
            raise SinkUnavailable(
                f"database did not answer within {self._write_timeout:g} s"
            ) from exc

    async def _call(
        self, wait: float, fallback: bool, fn: Callable[[Conn], T], abandon: bool = False
    ) -> T:
        def once(body: Callable[[Conn], R]) -> R:
            try:
                with self._pool.connection(timeout=wait) as conn:
                    return body(conn)
            except psycopg_pool.PoolTimeout:
                if not fallback:
                    raise
            with psycopg.connect(self.dsn, connect_timeout=5) as conn:
                _configure(conn)
                return body(conn)

        def call() -> T:
            try:
                return once(fn)
            except partitions.Missing as exc:
                missing = exc  # the write rolled back
            # The days get a short transaction of their own, then the write runs again
            # (rare: the writer creates a batch's days before writing it, ensure_days).
            once(lambda conn: partitions.create(conn, missing.table, missing.days))
            self.partition_days[missing.table] |= missing.days
            return once(fn)

        try:
            return await trio.to_thread.run_sync(
                call, limiter=self._limiter, abandon_on_cancel=abandon
            )
        except psycopg_pool.PoolTimeout as exc:
            raise SinkUnavailable("no database connection available") from exc
        except _DATA_ERRORS as exc:
            raise BadMessage("db_rejected", _first_line(exc)) from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise SinkUnavailable(f"database unavailable: {_first_line(exc)}") from exc

    async def stream(
        self,
        query: sql.Composed,
        params: Sequence[Any],
        send_channel: trio.MemorySendChannel[list[dict[str, Any]]],
        chunk: int = 1000,
    ) -> None:
        """Run ``query`` with a server-side cursor and send its rows in chunks.

        The worker thread holds one pooled connection for the whole scan and waits for the
        receiver between chunks (backpressure), so a large result never sits in memory. It
        stops early, returning the connection, when the receiver goes away. The send
        channel is closed at the end.
        """
        token = trio.lowlevel.current_trio_token()

        def scan() -> None:
            with (
                self._pool.connection() as conn,
                conn.cursor(name="sluice_stream", row_factory=dict_row) as cur,
            ):
                cur.itersize = chunk
                cur.execute(query, params)
                while rows := cur.fetchmany(chunk):
                    try:
                        trio.from_thread.run(send_channel.send, rows, trio_token=token)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return

        with send_channel:
            try:
                await trio.to_thread.run_sync(scan, limiter=self._limiter)
            except psycopg_pool.PoolTimeout as exc:
                raise SinkUnavailable("no database connection available") from exc
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                raise SinkUnavailable(f"database unavailable: {_first_line(exc)}") from exc

    async def listen(
        self,
        channels: Sequence[str],
        send_channel: trio.MemorySendChannel[list[tuple[str, str]]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """LISTEN on ``channels`` and send what arrives, as ``(channel, payload)`` lists in
        commit order, until cancelled. A dedicated connection (not the pool's), waited on
        in a worker thread for at most 0.1 s at a time (so a stop is quick); a lost
        connection is reopened (notifications sent meanwhile are lost: callers reconcile
        periodically).
        ``task_status.started()`` is called once the first LISTEN is in place."""
        limiter = trio.CapacityLimiter(1)
        started = False

        def wait(conn: Conn) -> list[tuple[str, str]]:
            out = [(n.channel, n.payload) for n in conn.notifies(timeout=0.1, stop_after=1)]
            if out:  # take what is already queued without waiting again
                out += [(n.channel, n.payload) for n in conn.notifies(timeout=0.001)]
            return out

        def connect() -> Conn:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
            for channel in channels:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            return conn

        with send_channel:
            while True:
                try:
                    conn = await trio.to_thread.run_sync(connect, limiter=limiter)
                except psycopg.OperationalError as exc:
                    logger.warning("cluster: cannot listen for notifications: %s", _first_line(exc))
                    await trio.sleep(1.0)
                    continue
                if not started:
                    started = True
                    task_status.started()
                try:
                    while True:
                        batch = await trio.to_thread.run_sync(wait, conn, limiter=limiter)
                        if batch:
                            await send_channel.send(batch)
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    logger.warning("cluster: notification connection lost: %s", _first_line(exc))
                    await trio.sleep(0.5)
                finally:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(conn.close, limiter=limiter)

    def statistics(self) -> dict[str, int]:
        return dict(self._pool.get_stats())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _safe_dsn(dsn: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    host = info.get("host", "localhost")
    return f"{host}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def _create_database_if_missing(dsn: str) -> None:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    name = info.get("dbname")
    if not name:
        return
    try:
        psycopg.connect(dsn, connect_timeout=10).close()
    except psycopg.OperationalError:
        admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
        try:
            ensure_database(admin, str(name))
        except psycopg.Error:
            return  # the pool's own connection attempt reports the real problem
        logger.info("created database %s", name)
