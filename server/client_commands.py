"""CLI commands that talk to a running server (``sluice tasks``, ``sluice status``) and
``sluice doctor``, which checks a set-up the way the original ``verify_setup.py`` did."""

from __future__ import annotations

import logging
import socket
from typing import Any

import attrs
import httpx
import trio

from engine.config import Settings
from engine.crypto import load_keyring
from engine.errors import SluiceError
from engine.instrument import render_tree
from engine.storage import Database, migrations, queries


def server_url(settings: Settings, url: str | None) -> str:
    if url:
        return url.rstrip("/")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    if host in ("0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{settings.port}"


def _get(settings: Settings, url: str, path: str) -> Any:
    headers = {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}
    response = httpx.get(url + path, headers=headers, timeout=10)
    response.raise_for_status()
    return response.json()


def tasks(settings: Settings, url: str | None) -> list[str]:
    """The running server's task tree as text, then its channels' backpressure."""
    base = server_url(settings, url)
    tree = _get(settings, base, "/api/debug/tasks")
    actors = _get(settings, base, "/api/debug/actors")
    lines = render_tree(tree["tree"])
    lines.append("")
    lines.append("channels (buffer used/capacity, tasks waiting to send/receive):")
    for name, ch in actors["channels"].items():
        waiting = f"send-waiters={ch['tasks_waiting_send']}"
        waiting += f"  receive-waiters={ch['tasks_waiting_receive']}"
        lines.append(f"  {name:<10} {ch['buffer_used']}/{ch['capacity']}  {waiting}")
    return lines


def status(settings: Settings, url: str | None) -> list[str]:
    """Connectors and their states, one line each."""
    base = server_url(settings, url)
    listing = _get(settings, base, "/api/connectors")
    lines = [
        f"{'CONNECTOR':<22} {'STATUS':<13} {'RECEIVED':>10} {'STORED':>10} {'ERRORS':>7}"
        f"  {'INSTANCE':<28} NAME"
    ]
    for connector in listing["data"]:
        cid = connector["connector_id"]
        st = _get(settings, base, f"/api/connectors/{cid}/status")
        lines.append(
            f"{cid:<22} {st['status']:<13} {st['messages_received']:>10} "
            f"{st['records_stored']:>10} {st['errors']:>7}  {st.get('instance_id') or '-':<28}"
            f" {connector['name']}"
        )
    if not listing["data"]:
        lines.append("(no connectors)")
    cluster = _get(settings, base, "/api/cluster")
    lines.append("")
    lines.append(f"{'INSTANCE':<40} {'LIVE':<5} {'HEARTBEAT':<27} {'CONNECTORS':>10}  URL")
    for instance in cluster["instances"]:
        mark = " *" if instance["self"] else ""
        lines.append(
            f"{instance['instance_id'] + mark:<40} {str(instance['live']).lower():<5} "
            f"{instance['heartbeat_at']:<27} {len(instance['connectors']):>10}  "
            f"{instance['listen_url'] or '-'}"
        )
    return lines


async def doctor(settings: Settings) -> tuple[list[str], list[str]]:
    """Checks a set-up; returns (fine, problems)."""
    ok: list[str] = []
    problems: list[str] = []
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # one line per problem is enough
    settings = attrs.evolve(settings, pool_min=1, pool_timeout=min(settings.pool_timeout, 5.0))
    try:
        load_keyring(
            settings.encryption_key,
            settings.encryption_keys,
            embedded=settings.embedded,
            data_dir=settings.data_dir,
        ).encrypt("probe", "doctor", "probe")
        ok.append("encryption key usable")
    except SluiceError as exc:
        problems.append(f"encryption: {exc}")
    try:
        with trio.fail_after(60):
            async with Database.open(settings, migrate=False) as db:
                info = await db.run(queries.server_info)
                version = await db.run(migrations.applied_version)
        ok.append(f"database reachable: PostgreSQL {info['version']} ({info['database']})")
        if version < migrations.latest_version():
            problems.append(
                f"migrations: schema at {version}, {migrations.latest_version()} expected"
                " (run `sluice migrate`)"
            )
        else:
            ok.append(f"migrations applied (version {version})")
    except (SluiceError, trio.TooSlowError) as exc:
        problems.append(f"database: {exc or 'no answer within 60 s'}")
    try:
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        with socket.socket(family) as sock:
            sock.bind((settings.host, settings.port))
        ok.append(f"port free: {settings.host}:{settings.port}")
    except OSError as exc:
        problems.append(f"port {settings.host}:{settings.port} not available: {exc.strerror}")
    policy = "allowed" if settings.allow_private_networks else "denied"
    extra = f"; allow-list: {', '.join(settings.egress_allow)}" if settings.egress_allow else ""
    ok.append(f"egress: metadata/link-local always denied; private networks {policy}{extra}")
    if settings.api_token is None and settings.host not in ("127.0.0.1", "::1", "localhost"):
        problems.append("no SLUICE_API_TOKEN while binding beyond loopback")
    return ok, problems
