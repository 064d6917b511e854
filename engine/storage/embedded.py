"""The embedded PostgreSQL: a private server under the data directory, for machines
without a database install. ``pgserver`` ships the server binaries.

Resource handling: :func:`embedded_postgres` is a context manager; the server it starts is
stopped when the block exits (and by ``pgserver``'s ``atexit`` hook if the process exits
another way). A server left running by a killed process is reused on the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from ..errors import ConfigurationError

logger = logging.getLogger(__name__)

DATABASE = "sluice"


@contextlib.contextmanager
def embedded_postgres(data_dir: Path, database: str = DATABASE) -> Iterator[str]:
    """Start (or reuse) the embedded server under ``data_dir/pgdata``; yield a DSN for
    ``database``, created if missing. Blocking: call it from a worker thread."""
    # pgserver asks platformdirs for a runtime directory, which warns when
    # XDG_RUNTIME_DIR is unset or shared (typical in containers): give it a private one.
    if not _private_dir(os.environ.get("XDG_RUNTIME_DIR")):
        runtime = (data_dir / "run").resolve()
        runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        runtime.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - pgserver is a hard dependency
        raise ConfigurationError("the embedded database needs the pgserver package") from exc
    pgdata = (data_dir / "pgdata").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    logger.info("starting embedded PostgreSQL in %s", pgdata)
    try:
        server = pgserver.get_server(  # type: ignore[attr-defined]
            pgdata, cleanup_mode="stop"
        )
    except Exception as exc:
        raise ConfigurationError(f"could not start the embedded PostgreSQL: {exc}") from exc
    try:
        ensure_database(server.get_uri("postgres"), database)
        yield server.get_uri(database)
    finally:
        logger.info("stopping embedded PostgreSQL")
        server.cleanup()


def _private_dir(path: str | None) -> bool:
    if not path or not os.path.isdir(path):
        return False
    return (os.stat(path).st_mode & 0o777) == 0o700


def ensure_database(admin_dsn: str, database: str) -> None:
    """Create ``database`` through the maintenance connection ``admin_dsn`` if missing."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if found.fetchone() is None:
            # Another process (a worker starting beside us) may create it first.
            with contextlib.suppress(
                psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation
            ):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
