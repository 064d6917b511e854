"""Settings, read once from environment variables (the README lists them all)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import attrs

from .errors import ConfigurationError

WS_TRANSPORTS = ("websockets", "trio-websocket")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@attrs.frozen
class Settings:
    """Everything an engine and its server need to know about their set-up.

    ``postgres_dsn`` ``None`` means: start the embedded PostgreSQL under ``data_dir``.
    """

    postgres_dsn: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path(".sluice")
    encryption_key: str | None = attrs.field(default=None, repr=False)
    allowed_origins: tuple[str, ...] = ()
    log_level: str = "INFO"
    ws_transport: str = "websockets"
    pool_min: int = 5
    pool_max: int = 20
    pool_timeout: float = 10.0
    batch_size: int = 5000
    write_concurrency: int = 2
    http_client: str = "lean"  # REST pollers: "lean" (own connection each) or "httpx"
    gc_freeze: bool = False  # from_env turns it on: a server process, not a test
    batch_max_age: float = 0.05
    drain_timeout: float = 10.0
    #: Cluster: seconds between heartbeats/reconciliations, and a lease's life without
    #: renewal (a dead or frozen instance's connectors move after about this long).
    cluster_interval: float = 1.0
    lease_ttl: float = 5.0
    #: A listening socket inherited from `sluice serve --workers N` (set by the CLI).
    listen_fd: int | None = None
    #: The disk spool for database outages (under data_dir/spool): its bound, and when
    #: it syncs (``batch``: after every batch; ``never``: the OS decides).
    spool_max_bytes: int = 4 * 1024**3
    spool_fsync: str = "batch"
    #: Records per second written back from the spool (0: as fast as the database takes
    #: them). The default is 5 times the 10,000 msg/s the outage benchmark feeds, so a backlog
    #: drains fast while the database keeps room for saves and other instances.
    spool_replay_rate: int = 50_000
    #: Seconds a batch write may take before the database counts as unavailable (stalled)
    #: and records go to the spool.
    write_timeout: float = 10.0
    #: Seconds a client may take no data of one write before it is disconnected
    #: (``server/write_deadline.py``).
    send_timeout: float = 15.0
    max_frame_bytes: int = 4 * 1024 * 1024
    connector_buffer_bytes: int = 64 * 1024 * 1024
    realtime_max_lag: int = 20_000
    realtime_max_subscribers: int = 1000
    encryption_keys: str | None = attrs.field(default=None, repr=False)
    allow_private_networks: bool = False
    egress_allow: tuple[str, ...] = ()
    api_token: str | None = attrs.field(default=None, repr=False)
    save_timeout: float = 10.0
    trio_debug: bool = False
    slow_step: float = 0.02
    log_format: str = "text"
    retention_days: int | None = None
    retention_interval: float = 3600.0
    migrate_batch: int = 20_000

    @property
    def embedded(self) -> bool:
        return self.postgres_dsn is None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); bad values raise
        :class:`ConfigurationError` naming the variable."""
        env = os.environ if env is None else env
        return cls(
            postgres_dsn=_dsn_from_env(env),
            host=env.get("SLUICE_HOST", "127.0.0.1"),
            port=_int(env, "SLUICE_PORT", 8000, 0, 65535),
            data_dir=Path(env.get("SLUICE_DATA_DIR", ".sluice")),
            encryption_key=env.get("ENCRYPTION_KEY") or None,
            allowed_origins=tuple(
                o.strip() for o in env.get("ALLOWED_ORIGINS", "").split(",") if o.strip()
            ),
            log_level=_choice(env, "SLUICE_LOG_LEVEL", "INFO", LOG_LEVELS, upper=True),
            ws_transport=_choice(env, "SLUICE_WS_TRANSPORT", "websockets", WS_TRANSPORTS),
            pool_min=_int(env, "SLUICE_POOL_MIN", 5, 1, 1000),
            pool_max=_int(env, "SLUICE_POOL_MAX", 20, 1, 1000),
            pool_timeout=_float(env, "SLUICE_POOL_TIMEOUT", 10.0, 0.1, 3600),
            batch_size=_int(env, "SLUICE_BATCH_SIZE", 5000, 1, 100_000),
            write_concurrency=_int(env, "SLUICE_WRITE_CONCURRENCY", 2, 1, 8),
            http_client=_choice(env, "SLUICE_HTTP_CLIENT", "lean", ("lean", "httpx")),
            gc_freeze=_bool(env, "SLUICE_GC_FREEZE", True),
            batch_max_age=_int(env, "SLUICE_BATCH_MAX_AGE_MS", 50, 1, 60_000) / 1000,
            drain_timeout=_float(env, "SLUICE_DRAIN_TIMEOUT", 10.0, 0.0, 3600),
            cluster_interval=_float(env, "SLUICE_CLUSTER_INTERVAL", 1.0, 0.1, 60),
            lease_ttl=_float(env, "SLUICE_LEASE_TTL", 5.0, 1.0, 600),
            spool_max_bytes=_int(env, "SLUICE_SPOOL_MAX_BYTES", 4 * 1024**3, 0, 2**50),
            spool_fsync=_choice(env, "SLUICE_SPOOL_FSYNC", "batch", ("batch", "never")),
            spool_replay_rate=_int(env, "SLUICE_SPOOL_REPLAY_RATE", 50_000, 0, 10_000_000),
            write_timeout=_float(env, "SLUICE_WRITE_TIMEOUT", 10.0, 0.1, 3600),
            send_timeout=_float(env, "SLUICE_SEND_TIMEOUT", 15.0, 0.1, 3600),
            max_frame_bytes=_int(env, "SLUICE_MAX_FRAME_BYTES", 4 * 1024 * 1024, 1024, 2**30),
            connector_buffer_bytes=_int(
                env, "SLUICE_CONNECTOR_BUFFER_BYTES", 64 * 1024 * 1024, 1024, 2**34
            ),
            realtime_max_lag=_int(env, "SLUICE_REALTIME_MAX_LAG", 20_000, 1, 10_000_000),
            save_timeout=_float(env, "SLUICE_SAVE_TIMEOUT", 10.0, 0.1, 3600),
            trio_debug=_bool(env, "SLUICE_TRIO_DEBUG"),
            slow_step=_int(env, "SLUICE_SLOW_STEP_MS", 20, 1, 60_000) / 1000,
            log_format=_choice(env, "SLUICE_LOG_FORMAT", "text", ("text", "json")),
            encryption_keys=env.get("ENCRYPTION_KEYS") or None,
            allow_private_networks=_bool(env, "SLUICE_ALLOW_PRIVATE_NETWORKS"),
            egress_allow=_host_ports(env, "SLUICE_EGRESS_ALLOW"),
            api_token=env.get("SLUICE_API_TOKEN") or None,
            retention_days=_int(env, "SLUICE_RETENTION_DAYS", 0, 0, 100_000) or None,
            retention_interval=_float(env, "SLUICE_RETENTION_INTERVAL", 3600.0, 1.0, 86_400.0),
            migrate_batch=_int(env, "SLUICE_MIGRATE_BATCH", 20_000, 1, 10_000_000),
            realtime_max_subscribers=_int(
                env, "SLUICE_REALTIME_MAX_SUBSCRIBERS", 1000, 1, 1_000_000
            ),
        )


def _dsn_from_env(env: Mapping[str, str]) -> str | None:
    if dsn := env.get("POSTGRES_DSN"):
        return dsn
    keys = ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")
    if not any(env.get(k) for k in keys):
        return None
    host = env.get("POSTGRES_HOST") or "127.0.0.1"
    port = _int(env, "POSTGRES_PORT", 5432, 1, 65535)
    user = quote(env.get("POSTGRES_USER") or "postgres", safe="")
    password = env.get("POSTGRES_PASSWORD") or ""
    auth = f"{user}:{quote(password, safe='')}" if password else user
    db = quote(env.get("POSTGRES_DB") or "etl_tool", safe="")  # the original service's default
    return f"postgresql://{auth}@{host}:{port}/{db}"


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


def _host_ports(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    items = tuple(i.strip() for i in (env.get(name) or "").split(",") if i.strip())
    for item in items:
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"{name} entries must be host:port, got {item!r}")
    return items


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigurationError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigurationError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _choice(
    env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...], upper: bool = False
) -> str:
    raw = env.get(name) or default
    value = raw.upper() if upper else raw
    if value not in choices:
        raise ConfigurationError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value
