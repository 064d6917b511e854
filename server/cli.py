"""The ``sluice`` command line."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Sequence

import attrs
import httpx
import trio

from engine.config import Settings
from engine.errors import ConfigurationError
from engine.redact import describe_http_error
from engine.storage import Database, migrations

from . import client_commands
from .logs import configure_logging
from .rotate import rotate_keys
from .serve import serve
from .workers import run_workers

logger = logging.getLogger("sluice")

DESCRIPTION = """\
Sluice: real-time ETL from WebSocket and REST sources into PostgreSQL, pushed live to
WebSocket subscribers. Configuration comes from environment variables (see README);
with no POSTGRES_* variables set, Sluice runs its own embedded PostgreSQL under
SLUICE_DATA_DIR (default ./.sluice).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p_serve = sub.add_parser(
        "serve",
        help="run the engine and the HTTP/WebSocket server",
        description="Run the engine and serve the REST API and /api/realtime. "
        "SIGINT/SIGTERM drain (stop sources, commit, close subscribers) and exit 0.",
    )
    p_serve.add_argument("--host", help="address to bind (default $SLUICE_HOST or 127.0.0.1)")
    p_serve.add_argument(
        "--port", type=int, help="port to bind, 0 for any free port (default $SLUICE_PORT or 8000)"
    )
    p_serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="engine processes sharing the port and the database (a cluster; default 1)",
    )
    p_serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    p_serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow binding beyond loopback without SLUICE_API_TOKEN (not recommended)",
    )
    sub.add_parser(
        "rotate-keys",
        help="re-encrypt every stored secret with the newest key",
        description="Re-encrypt stored credentials and header/query values with ENCRYPTION_KEY,"
        " decrypting with it or any key in ENCRYPTION_KEYS. Safe to rerun after an"
        " interruption: values already under the newest key are left alone.",
    )
    for name, text in (
        ("tasks", "print the Trio task tree and channel backpressure of a running server"),
        ("status", "list the connectors of a running server with their states"),
    ):
        p = sub.add_parser(name, help=text, description=text.capitalize() + ".")
        p.add_argument("--url", help="server URL (default from SLUICE_HOST/SLUICE_PORT)")
    sub.add_parser(
        "doctor",
        help="check the set-up: database, migrations, key, port, egress policy",
        description="Check that Sluice can run here: database reachable (and its version),"
        " migrations applied, encryption key usable, the port free, the egress policy."
        " Exits 1 with a list of what is wrong.",
    )
    sub.add_parser(
        "migrate",
        help="apply pending database migrations and exit",
        description="Apply every pending schema migration to the configured database "
        "(the embedded one if none is configured), then exit. `serve` also does this. "
        "A database from before the day-partitioned record tables has its records moved "
        "into them here, SLUICE_MIGRATE_BATCH rows per committed transaction; interrupted, "
        "the next run goes on where it stopped.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level, settings.log_format)
        if args.command == "serve":
            if args.host:
                settings = attrs.evolve(settings, host=args.host)
            if args.port is not None:
                if not 0 <= args.port <= 65535:
                    raise ConfigurationError("--port must be between 0 and 65535")
                settings = attrs.evolve(settings, port=args.port)
            check_exposure(settings, insecure=args.insecure)
            if not 1 <= args.workers <= 64:
                raise ConfigurationError("--workers must be between 1 and 64")
            if args.workers > 1:
                return run_workers(settings, args.workers)
            if args.listen_fd is not None:
                settings = attrs.evolve(settings, listen_fd=args.listen_fd)
            trio.run(serve, settings)
        elif args.command == "migrate":
            trio.run(_migrate, settings)
        elif args.command == "rotate-keys":
            trio.run(_rotate, settings)
        elif args.command in ("tasks", "status"):
            command = client_commands.tasks if args.command == "tasks" else client_commands.status
            try:
                print("\n".join(command(settings, args.url)))
            except httpx.HTTPError as exc:
                print(
                    f"sluice: cannot reach the server: {describe_http_error(exc)}", file=sys.stderr
                )
                return 1
        elif args.command == "doctor":
            fine, failures = trio.run(client_commands.doctor, settings)
            for line in fine:
                print(f"ok    {line}")
            for line in failures:
                print(f"FAIL  {line}")
            return 1 if failures else 0
    except ConfigurationError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:
        # The composition root is where groups are inspected: a configuration problem
        # found while starting is a clear message, not a traceback.
        problems, rest = group.split(ConfigurationError)
        if problems is None or rest is not None:
            raise
        for problem in _leaves(problems):
            print(f"sluice: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def check_exposure(settings: Settings, *, insecure: bool) -> None:
    """Refuse to serve the management API beyond loopback without a token."""
    if settings.api_token or insecure or is_loopback(settings.host):
        return
    raise ConfigurationError(
        f"refusing to listen on {settings.host} without SLUICE_API_TOKEN: anyone who can"
        " reach it could read data and run connectors. Set a token, bind to 127.0.0.1,"
        " or pass --insecure if this is deliberate."
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _rotate(settings: Settings) -> None:
    async with Database.open(settings) as db:
        changed = await rotate_keys(db, settings)
    print(f"re-encrypted {changed} stored secret value(s) with the newest key")


async def _migrate(settings: Settings) -> None:
    async with Database.open(settings, migrate=False) as db:
        done = await db.run(migrations.migrate, move_batch=settings.migrate_batch)
    if done.applied:
        print(f"applied migrations: {', '.join(map(str, done.applied))}")
    else:
        print(f"database is up to date (version {migrations.latest_version()})")
    if done.moved:
        print(f"moved {done.moved} records into day partitions")


if __name__ == "__main__":
    sys.exit(main())
