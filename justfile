# Sluice developer commands. Every recipe sets up ./.venv on first use.
set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments

python := env_var_or_default("PYTHON", "python3")
venv := ".venv"
bin := venv / "bin"

# List the recipes.
default:
    @just --list

# Create .venv and install Sluice with its dev tools (re-runs when pyproject.toml changes).
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x {{bin}}/python ]; then {{python}} -m venv {{venv}}; fi
    if [ ! -f {{venv}}/.installed ] || [ pyproject.toml -nt {{venv}}/.installed ]; then
        {{bin}}/python -m pip install --quiet --upgrade pip
        {{bin}}/python -m pip install --quiet -e '.[dev]'
        touch {{venv}}/.installed
    fi

# Start the server (embedded PostgreSQL unless POSTGRES_* / POSTGRES_DSN is set).
serve *args: setup
    {{bin}}/sluice serve "$@"

# Run the whole test suite.
test *args: setup
    {{bin}}/python -m pytest "$@"

# Format the code in place.
fmt: setup
    {{bin}}/ruff format engine server tests bench
    {{bin}}/ruff check --fix --select I engine server tests bench

# Lint and type-check without changing files.
lint: setup
    {{bin}}/ruff format --check engine server tests bench
    {{bin}}/ruff check engine server tests bench
    {{bin}}/mypy

# Format, lint, type-check and test: run before every commit.
check: fmt lint test

# Run the benchmarks (short versions; pass --full for the long ones). Adds the bench extra
# (cryptofeed, the peer measured in every run) to ./.venv.
bench *args: setup
    {{bin}}/python -m pip install --quiet -e '.[dev,bench]'
    {{bin}}/python -m bench "$@"

# Apply database migrations.
migrate: setup
    {{bin}}/sluice migrate
