"""Keepalive, stale-feed detection and reconnect backoff, in virtual time over in-memory
streams (the scripted peer speaks the server side of the WebSocket protocol)."""

from __future__ import annotations

import attrs
import trio
import trio.testing

from engine.backoff import Backoff
from engine.models import ConnectorSpec, ErrorEvent, GapEvent, SourceBatch
from engine.processor import Processor
from engine.transport import SansIOTransport
from engine.ws_connector import WebSocketConnector

from .scripted_peer import PeerFactory, ScriptedPeer


def spec(**options: object) -> ConnectorSpec:
    base = ConnectorSpec(
        connector_id="conn_k",
        name="k",
        api_url="ws://feed.test/ws",
        protocol="websocket",
        exchange="custom",
        subscribe_messages=["sub"],
    )
    return attrs.evolve(base, **options)  # type: ignore[misc]


def fixed_backoff(delay: float) -> Backoff:
    backoff = Backoff(base=delay, cap=delay)
    backoff.rng.uniform = lambda a, b: b  # type: ignore[method-assign]
    return backoff


def connector(
    spec_: ConnectorSpec, factory: PeerFactory, journal: list[object]
) -> tuple[WebSocketConnector, trio.MemoryReceiveChannel[SourceBatch]]:
    send, receive = trio.open_memory_channel[SourceBatch](1000)
    actor = WebSocketConnector(
        spec_,
        send,
        SansIOTransport(opener=factory),
        backoff=fixed_backoff(1.0),
        journal=journal.append,
    )
    return actor, receive


async def answer_pings(peer: ScriptedPeer) -> None:
    await peer.handshake()
    await peer.serve()


async def half_open(peer: ScriptedPeer) -> None:
    await peer.handshake()
    await peer.send_text('{"hello": 1}')
    peer.silent = True  # reads nothing and answers nothing, like a dead TCP path


async def test_half_open_source_is_detected_by_pong_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    journal: list[object] = []
    factory = PeerFactory(nursery, half_open)
    actor, _ = connector(spec(ping_interval=20.0, pong_timeout=10.0), factory, journal)
    nursery.start_soon(actor.run)
    await trio.sleep(31.5)
    errors = [e for e in journal if isinstance(e, ErrorEvent)]
    assert [e.kind for e in errors] == ["pong_timeout"]
    assert factory.connect_times == [0.0, 31.0]  # detected at 20 + 10, reconnected 1 s later
    gaps = [e for e in journal if isinstance(e, GapEvent)]
    assert [g.cause for g in gaps] == ["pong_timeout"]
    actor.request_stop()


async def test_quiet_feed_with_live_pongs_is_not_reconnected(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    journal: list[object] = []
    factory = PeerFactory(nursery, answer_pings)
    actor, _ = connector(spec(ping_interval=20.0, pong_timeout=10.0), factory, journal)
    nursery.start_soon(actor.run)
    await trio.sleep(310)
    assert factory.connect_times == [0.0]
    assert journal == []
    [peer] = factory.peers
    assert peer.pings == [20.0 * n for n in range(1, 16)]
    assert actor.statistics().pongs_received == 15
    assert peer.texts == ["sub"]
    actor.request_stop()


async def test_stale_feed_timeout_reconnects_and_resubscribes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    journal: list[object] = []
    factory = PeerFactory(nursery, answer_pings)
    actor, _ = connector(spec(stale_timeout=45.0), factory, journal)
    nursery.start_soon(actor.run)
    await trio.sleep(100)
    assert factory.connect_times == [0.0, 46.0, 92.0]
    assert [e.kind for e in journal if isinstance(e, ErrorEvent)] == ["stale", "stale"]
    assert all(peer.texts[:1] == ["sub"] for peer in factory.peers)
    actor.request_stop()


async def test_okx_text_ping_is_sent_on_schedule(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    journal: list[object] = []
    factory = PeerFactory(nursery, answer_pings)
    actor, _ = connector(
        spec(app_ping="ping", app_ping_interval=25.0, ping_interval=0), factory, journal
    )
    nursery.start_soon(actor.run)
    await trio.sleep(80)
    [peer] = factory.peers
    assert peer.texts == ["sub", "ping", "ping", "ping"]
    assert peer.pings == []  # protocol pings disabled with ping_interval=0
    actor.request_stop()


async def test_reconnect_backoff_grows_with_full_jitter_bounds(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    attempts: list[float] = []

    async def refuse(host: str, port: int, secure: bool) -> trio.abc.Stream:
        attempts.append(trio.current_time())
        raise OSError("connection refused")

    send, _ = trio.open_memory_channel[SourceBatch](1)
    backoff = Backoff(base=1.0, cap=8.0)
    backoff.rng.uniform = lambda a, b: b  # type: ignore[method-assign]  # the ceiling itself
    journal: list[object] = []
    actor = WebSocketConnector(
        spec(), send, SansIOTransport(opener=refuse), backoff=backoff, journal=journal.append
    )
    nursery.start_soon(actor.run)
    await trio.sleep(40)
    assert attempts == [0.0, 1.0, 3.0, 7.0, 15.0, 23.0, 31.0, 39.0]
    assert actor.statistics().status == "reconnecting"
    assert {e.kind for e in journal if isinstance(e, ErrorEvent)} == {"connect_failed"}
    assert not [e for e in journal if isinstance(e, GapEvent)]  # never connected: no gap
    actor.request_stop()


async def test_invalid_utf8_and_oversized_frames_are_counted_per_category(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """B4 at the socket: bytes no JSON parser would take, and a message over the limit."""

    async def script(peer: ScriptedPeer) -> None:
        await peer.handshake()
        if len(factory.peers) == 1:
            peer.protocol.send_text(b'{"bad": "\xff\xfe"}')  # not UTF-8, sent as text
            await peer.send_text('{"ok": 1}')
            await peer.send_text('{"big": "' + "x" * 5000 + '"}')
        await peer.serve()

    factory = PeerFactory(nursery, script)
    journal: list[object] = []
    send, receive = trio.open_memory_channel[SourceBatch](100)
    actor = WebSocketConnector(
        spec(),
        send,
        SansIOTransport(opener=factory),
        max_message_bytes=1000,
        backoff=fixed_backoff(1.0),
        journal=journal.append,
    )
    nursery.start_soon(actor.run)
    await trio.sleep(5)
    stats = actor.statistics()
    assert stats.oversized_messages == 1
    assert factory.connect_times == [0.0, 1.0]  # the oversized message cost a reconnect
    assert [e.kind for e in journal if isinstance(e, ErrorEvent)] == ["oversized"]
    _, unused_in = trio.open_memory_channel[SourceBatch](0)
    unused_out, _ = trio.open_memory_channel[object](0)
    processor = Processor(unused_in, unused_out)  # type: ignore[arg-type]
    records = processor.process(receive.receive_nowait())
    assert len(records) == 1
    counters = processor.counters_for("conn_k")
    assert dict(counters.rejected_by_category) == {"invalid_utf8": 1}
    actor.request_stop()
