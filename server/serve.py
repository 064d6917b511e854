"""The composition root of ``sluice serve``: engine and web server in one nursery.

Startup: the engine (storage → writer → hub → processor → connectors) reports ready, then
hypercorn binds and serves the app. Shutdown on SIGINT/SIGTERM: the engine drains first
(connectors stop, the last batch commits, subscribers are closed with 1001) while the
server still answers, then hypercorn closes gracefully. A second signal cancels at once.
"""

from __future__ import annotations

import logging
import signal
from functools import partial

import attrs
import hypercorn.config
import hypercorn.trio
import trio
from quart_trio import QuartTrio

from engine.config import Settings
from engine.engine import Engine

from .app import create_app
from .logs import set_instance

logger = logging.getLogger(__name__)


@attrs.frozen
class Service:
    """A running server: its engine and the URLs it listens on."""

    engine: Engine
    urls: list[str]

    @property
    def url(self) -> str:
        return self.urls[0]

    def stop(self) -> None:
        self.engine.request_stop()


def hypercorn_config(settings: Settings) -> hypercorn.config.Config:
    config = hypercorn.config.Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    # A worker of `sluice serve --workers N` serves the socket its parent bound.
    fd = settings.listen_fd
    config.bind = [f"fd://{fd}"] if fd is not None else [f"{host}:{settings.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 5.0
    config.websocket_ping_interval = 20.0
    return config


async def serve(
    settings: Settings,
    *,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[Service] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run engine and server until a signal (or :meth:`Service.stop`), then drain and exit."""
    engine = Engine(settings)
    if handle_signals:  # a process of its own: its log lines name its instance
        set_instance(engine.instance_id)
    server_stop = trio.Event()
    async with trio.open_nursery() as nursery:
        if handle_signals:
            nursery.start_soon(_watch_signals, engine, nursery.cancel_scope)
        await nursery.start(engine.run)
        app = create_app(engine)
        server_done = trio.Event()
        urls = await nursery.start(
            partial(_serve_http, app, hypercorn_config(settings), server_stop, server_done)
        )
        for url in urls:
            logger.info("Sluice listening on %s", url)
        await engine.advertise(urls[0])
        task_status.started(Service(engine, list(urls)))
        await engine.stopped.wait()
        server_stop.set()
        await server_done.wait()
        nursery.cancel_scope.cancel()  # only the signal watcher is left
    logger.info("Sluice stopped")


async def _serve_http(
    app: QuartTrio,
    config: hypercorn.config.Config,
    stop: trio.Event,
    done: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    try:
        await hypercorn.trio.serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)
    finally:
        done.set()


async def _watch_signals(engine: Engine, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if engine._stop.is_set():
                logger.warning("second signal: stopping without draining")
                scope.cancel()
                return
            logger.info("%s received: draining", signal.Signals(signum).name)
            engine.request_stop()
