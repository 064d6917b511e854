"""Placeholder entry point until the benchmark runner lands (issue #6)."""

import sys

print("bench: the benchmark runner is not written yet (issue #6)", file=sys.stderr)
sys.exit(1)
