"""Spreading connectors over instances (pure): even counts, and only the excess moves."""

from __future__ import annotations

from engine.cluster.quota import plan, quota


def test_quotas_are_even_and_sum_to_the_wanted_count() -> None:
    live = ["c", "a", "b"]
    for wanted in range(0, 14):
        shares = [quota(live, me, wanted) for me in live]
        assert sum(shares) == wanted
        assert max(shares) - min(shares) <= 1
    assert quota(live, "gone", 12) == 0


def test_a_joining_instance_takes_only_the_excess() -> None:
    wanted = [f"k{i}" for i in range(12)]
    a, b = wanted[:6], wanted[6:]
    # c joins: each of a and b hands on two of its six, the rest stay where they are.
    for owned in (a, b):
        release, acquire = plan(owned, wanted, [], quota(["a", "b", "c"], "a", 12))
        assert len(release) == 2
        assert set(release) <= set(owned)
        assert acquire == []
    release, acquire = plan([], wanted, ["k4", "k5", "k10", "k11"], 4)
    assert (release, acquire) == ([], ["k4", "k5", "k10", "k11"])


def test_stopped_connectors_are_released_and_free_ones_taken_up_to_the_share() -> None:
    release, acquire = plan(["x", "k1"], ["k1", "k2", "k3"], ["k2", "k3"], 2)
    assert release == ["x"]  # no longer wanted
    assert acquire == ["k2"]  # up to the share of two
