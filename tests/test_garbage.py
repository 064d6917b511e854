"""The engine's young collections (``engine.engine.collect_young``): with the collector
tuned for records (young collections every 50,000 net allocations), reference cycles such
as the ones every HTTP request leaves must still be freed within seconds."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
import trio

from engine.engine import YOUNG_COLLECTION_INTERVAL, collect_young, tune_garbage_collector


class Node:
    """An object in a reference cycle with itself, as werkzeug's route matcher leaves."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def tuned() -> Iterator[None]:
    """The collector as the server tunes it (:func:`tune_garbage_collector`), undone
    afterwards."""
    before = gc.get_threshold()
    tune_garbage_collector()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_a_young_cycle_is_freed_within_an_interval(
    tuned: None, autojump_clock: trio.abc.Clock
) -> None:
    node = Node()
    gone = weakref.ref(node)
    del node
    assert gone() is not None  # nothing frees a cycle but a collection
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_young)
        await trio.sleep(YOUNG_COLLECTION_INTERVAL * 1.5)
        assert gone() is None
        nursery.cancel_scope.cancel()


async def test_a_cycle_that_outlived_a_young_collection_is_freed_within_ten(
    tuned: None, autojump_clock: trio.abc.Clock
) -> None:
    node = Node()
    gone = weakref.ref(node)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_young)
        await trio.sleep(YOUNG_COLLECTION_INTERVAL * 1.5)  # alive then: moved to the middle
        del node
        await trio.sleep(YOUNG_COLLECTION_INTERVAL * 5)
        assert gone() is not None  # young collections do not look there
        await trio.sleep(YOUNG_COLLECTION_INTERVAL * 4)
        assert gone() is None
        nursery.cancel_scope.cancel()
