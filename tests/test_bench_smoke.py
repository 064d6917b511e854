"""The benchmark runner at tiny sizes, so it cannot rot (the real runs are `just bench`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_bench_runner_smoke(admin_dsn: str) -> None:
    env = {**os.environ, "POSTGRES_DSN": admin_dsn}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "naive design" in result.stdout
    assert "through `custom`" in result.stdout  # the cost of shape detection
    for key in ("smoke-ws", "smoke-okx", "smoke-rest", "smoke-stall", "smoke-cluster"):
        assert f"### {key}:" in result.stdout
    # Two instances stored every record once, and the subscriber on the first got them all
    # (half of them relayed from the second).
    cluster = result.stdout.split("### smoke-cluster:")[1]
    assert "| records stored / expected | 800 / 800 |" in cluster
    assert "| 1 / 800 / 0 |" in cluster
