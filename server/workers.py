"""``sluice serve --workers N``: N engine processes on one port, one embedded database.

The parent binds the listening socket once and hands it to every worker (hypercorn's
``fd://`` bind), so the kernel spreads connections over them; the workers are a cluster
on one database (``engine.cluster``): each connector runs in exactly one of them and every
subscriber sees every worker's records. With the embedded PostgreSQL the parent starts it
once, before the workers, and stops it after the last one exited; it also makes sure the
encryption key exists and passes it down, so all workers read the same credentials.

Signals: SIGINT/SIGTERM to the parent are sent on to every worker, which drains as a
single ``sluice serve`` does; the parent exits when all of them did (0 if all exited 0).
A worker that dies on its own is started again after a second (its connectors have moved
to the others meanwhile).

Resource handling: the parent owns the socket, the worker processes and the embedded
server; each is closed or stopped on the way out, also after an error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from engine.config import Settings
from engine.crypto import KEY_FILE, load_keyring
from engine.storage.embedded import embedded_postgres

logger = logging.getLogger(__name__)

RESTART_DELAY = 1.0


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[dict[str, str]]:
    """The environment that points workers at the one database (and key)."""
    if not settings.embedded:
        yield {}
        return
    load_keyring(None, None, embedded=True, data_dir=settings.data_dir)  # creates it once
    key = (settings.data_dir / KEY_FILE).read_text().strip()
    with embedded_postgres(settings.data_dir) as dsn:
        yield {"POSTGRES_DSN": dsn, "ENCRYPTION_KEY": key}


def _listen(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def run_workers(settings: Settings, workers: int) -> int:
    """Serve with ``workers`` engine processes until a signal; return the exit code."""
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _database(settings) as env_extra, contextlib.closing(_listen(settings)) as sock:
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            env = {**os.environ, **env_extra}
            command = [
                sys.executable,
                "-m",
                "server.cli",
                "serve",
                "--listen-fd",
                str(sock.fileno()),
                "--port",
                str(port),
                "--host",
                settings.host,
                "--insecure",  # the parent made the exposure check already
            ]

            def spawn() -> subprocess.Popen[bytes]:
                return subprocess.Popen(command, env=env, pass_fds=(sock.fileno(),))

            procs = [spawn() for _ in range(workers)]
            logger.info("Sluice listening on http://%s:%d (%d workers)", shown, port, workers)
            codes: list[int] = []
            while not stopping:
                time.sleep(0.2)
                for i, proc in enumerate(procs):
                    code = proc.poll()
                    if code is not None and not stopping:
                        logger.error("worker %d exited with %d; starting it again", proc.pid, code)
                        time.sleep(RESTART_DELAY)
                        procs[i] = spawn()
            logger.info("stopping %d workers (draining)", len(procs))
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + settings.drain_timeout + 20
            for proc in procs:
                try:
                    codes.append(proc.wait(max(0.1, deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    logger.error("worker %d did not stop in time; killing it", proc.pid)
                    proc.kill()
                    codes.append(proc.wait())
        logger.info("Sluice stopped")
        return 0 if all(code == 0 for code in codes) else 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
