"""The cluster relay batches its read-backs: consecutive notifications, one query."""

from __future__ import annotations

from typing import Any

import orjson

from engine.cluster.relay import Relay
from engine.hub import HubItem, Notice


class Log:
    """Stands in for the database (every read-back; no rows) and the hub (every item)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[list[int]]] | HubItem] = []

    async def run(self, fn: Any, table: str, runs: list[list[int]]) -> list[Any]:
        self.calls.append((table, [list(r) for r in runs]))
        return []

    async def send(self, item: HubItem) -> None:
        self.calls.append(item)


def records(instance: str, table: str, *runs: tuple[int, int]) -> str:
    body = {"i": instance, "t": "records", "s": table, "r": [list(r) for r in runs]}
    return orjson.dumps(body).decode()


async def test_consecutive_notifications_are_read_back_in_one_query_per_table() -> None:
    log = Log()
    relay = Relay(log, log, "me")  # type: ignore[arg-type]
    gap = {"i": "b", "t": "gap", "n": {"connector_id": "c1", "type": "gap"}}
    await relay.handle(
        [
            records("a", "websocket_messages", (1, 5)),
            records("me", "websocket_messages", (6, 9)),  # our own: skipped
            records("b", "websocket_messages", (10, 12), (20, 20)),
            records("a", "api_connector_data", (3, 4)),
            orjson.dumps(gap).decode(),  # a notice: what came before is relayed first
            records("a", "websocket_messages", (13, 14)),
            "not json",
        ]
    )
    assert log.calls == [
        ("websocket_messages", [[1, 5], [10, 12], [20, 20]]),
        ("api_connector_data", [[3, 4]]),
        Notice("c1", {"connector_id": "c1", "type": "gap"}),
        ("websocket_messages", [[13, 14]]),
    ]
    assert relay.statistics().notifications == 5
