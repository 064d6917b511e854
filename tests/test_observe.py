"""Health, metrics, the task tree and actor statistics, JSON logs, and the CLI commands
that read them from a running server."""

from __future__ import annotations

import logging
import subprocess
import sys

import httpx
import orjson
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from engine.instrument import render_tree
from server.client_commands import status, tasks
from server.logs import JsonFormatter
from server.serve import Service

from .fake_exchange import FakeExchange

pytestmark = pytest.mark.e2e


async def test_health_metrics_and_debug_views(service: Service, exchange: FakeExchange) -> None:
    async with httpx.AsyncClient(base_url=service.url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert (body["status"], body["problems"]) == ("ready", [])
        assert body["spool"] == {
            "spooling": False,
            "bytes": 0,
            "oldest_age_seconds": None,
            "records_replayed": 0,
            "records_lost": 0,
        }
        body = {"name": "b", "api_url": exchange.url("/binance?count=50"), "exchange": "binance"}
        cid = (await client.post("/api/connectors", json=body)).json()["connector_id"]
        await client.post(f"/api/connectors/{cid}/start")
        with trio.fail_after(20):
            while (await client.get(f"/api/connectors/{cid}/status")).json()["records_stored"] < 50:
                await trio.sleep(0.05)
        scrape = await client.get("/metrics")
        assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
        received = {
            s.labels["connector_id"]: s.value
            for s in families["sluice_connector_messages_received"].samples
        }
        assert received[cid] == 50
        assert families["sluice_writer_rows"].samples[0].value >= 50
        assert families["sluice_writer_flush_seconds"].type == "histogram"
        assert families["sluice_loop_lag_seconds"].type == "histogram"
        assert families["sluice_gc_pause_seconds"].type == "histogram"
        assert families["sluice_hub_fanout_seconds"].type == "histogram"
        # Every series names the instance, so a cluster's scrapes never collide.
        me = service.engine.instance_id
        assert all(
            sample.labels.get("instance") == me
            for family in families.values()
            for sample in family.samples
        )
        actors = (await client.get("/api/debug/actors")).json()
        assert actors["coordinator"]["instance_id"] == me
        assert actors["coordinator"]["owned"] == {cid: 1}  # its lease, epoch 1
        assert families["process_resident_memory_bytes"].samples[0].value > 0
        assert families["process_open_fds"].samples[0].value > 0

        tree = (await client.get("/api/debug/tasks")).json()
        names = "\n".join(render_tree(tree["tree"]))
        assert "Supervisor.run" in names or "supervisor" in names.lower()
        assert (
            "WebSocketConnector" in names
            or "ws_connector" in names
            or cid in names
            or "_run_connector" in names
        )
        assert tree["loop"]["busy_seconds"] > 0
        actors = (await client.get("/api/debug/actors")).json()
        assert set(actors["channels"]) == {"raw", "records", "committed"}
        assert {
            "capacity",
            "buffer_used",
            "peak",
            "tasks_waiting_send",
            "tasks_waiting_receive",
        } <= set(actors["channels"]["raw"])
        assert actors["writer"]["rows_committed"] >= 50
        assert {s["name"] for s in actors["supervisors"]} >= {"writer", "hub", "processor"}
        assert actors["loop"]["lag_ms_latest"] >= 0  # the probe has run
        assert set(actors["loop"]) == {"lag_ms_latest", "lag_ms_mean", "slow_steps"}
        detail = (await client.get(f"/api/connectors/{cid}/status")).json()
        assert detail["actor"]["buffer_limit_bytes"] > 0

    lines = await trio.to_thread.run_sync(tasks, service.engine.settings, service.url)
    assert any("raw" in line and "send-waiters" in line for line in lines)
    table = await trio.to_thread.run_sync(status, service.engine.settings, service.url)
    assert cid in table[1]
    assert "running" in table[1]
    assert service.engine.instance_id in table[1]  # who runs it
    assert any(line.startswith(service.engine.instance_id + " *") for line in table)


def test_render_tree_draws_branches() -> None:
    tree = {
        "name": "root",
        "waiting_on": None,
        "nurseries": [
            [
                {
                    "name": "a",
                    "waiting_on": "MemorySendChannel.send (trio._channel:1)",
                    "nurseries": [],
                },
                {"name": "b", "waiting_on": None, "nurseries": [[{"name": "c", "nurseries": []}]]},
            ]
        ],
    }
    assert render_tree(tree) == [
        "root",
        "├─ a  <- MemorySendChannel.send (trio._channel:1)",
        "└─ b",
        "   └─ c",
    ]


def test_json_log_lines_carry_the_connector_id() -> None:
    record = logging.LogRecord(
        "engine.ws_connector",
        logging.WARNING,
        "",
        0,
        "connector %s: %s",
        ("conn_0123abcd", "GET https://h/x?key=S"),
        None,
    )
    line = orjson.loads(JsonFormatter().format(record))
    assert line["connector_id"] == "conn_0123abcd"
    assert line["level"] == "WARNING"
    assert line["logger"] == "engine.ws_connector"


def test_doctor_lists_what_is_wrong(tmp_path: object) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "POSTGRES_DSN": "postgresql://postgres@127.0.0.1:1/none",
        "SLUICE_DATA_DIR": str(tmp_path),
        "SLUICE_POOL_TIMEOUT": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "FAIL  encryption: ENCRYPTION_KEY is required" in result.stdout
    assert "FAIL  database:" in result.stdout
    assert "ok    egress:" in result.stdout
