"""The ``sluice`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import attrs
import trio

from engine.config import Settings
from engine.errors import ConfigurationError
from engine.storage import Database, migrations

from .logs import configure_logging
from .serve import serve

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
    sub.add_parser(
        "migrate",
        help="apply pending database migrations and exit",
        description="Apply every pending schema migration to the configured database "
        "(the embedded one if none is configured), then exit. `serve` also does this.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        if args.command == "serve":
            if args.host:
                settings = attrs.evolve(settings, host=args.host)
            if args.port is not None:
                if not 0 <= args.port <= 65535:
                    raise ConfigurationError("--port must be between 0 and 65535")
                settings = attrs.evolve(settings, port=args.port)
            trio.run(serve, settings)
        elif args.command == "migrate":
            trio.run(_migrate, settings)
    except ConfigurationError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


async def _migrate(settings: Settings) -> None:
    async with Database.open(settings, migrate=False) as db:
        applied = await db.run(migrations.migrate)
    if applied:
        print(f"applied migrations: {', '.join(map(str, applied))}")
    else:
        print(f"database is up to date (version {migrations.latest_version()})")


if __name__ == "__main__":
    sys.exit(main())
