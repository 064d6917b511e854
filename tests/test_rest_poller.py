"""The REST poller in virtual time, with httpx.MockTransport as the source."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import orjson
import pytest
import trio
import trio.testing

from engine.auth import Credentials
from engine.http_client import HttpxClient
from engine.models import ConnectorSpec, SourceBatch
from engine.rest_poller import PERMANENT_BACKOFF, RestPoller, retry_after_seconds

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def spec(interval_ms: int = 1000, **changes: object) -> ConnectorSpec:
    import attrs

    base = ConnectorSpec(
        connector_id="conn_r",
        name="r",
        api_url="https://api.example.com/v1/ticker?symbol=BTC",
        protocol="rest",
        exchange="custom",
        polling_interval=interval_ms,
    )
    return attrs.evolve(base, **changes)  # type: ignore[misc]


def poller(
    handler: Handler, spec_: ConnectorSpec, **kw: object
) -> tuple[RestPoller, trio.MemoryReceiveChannel[SourceBatch], list[float]]:
    times: list[float] = []

    async def record(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        return await handler(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(record))
    send, receive = trio.open_memory_channel[SourceBatch](1000)
    return RestPoller(spec_, send, HttpxClient(client), **kw), receive, times  # type: ignore[arg-type]


async def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=[{"price": "1.5"}, {"price": "1.6"}])


async def test_drift_free_schedule(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    actor, receive, times = poller(ok, spec(250))
    nursery.start_soon(actor.run)
    await trio.sleep(1.1)
    assert times == [0.0, 0.25, 0.5, 0.75, 1.0]
    # Virtual time: every tick started on its grid time, within the first bucket.
    assert actor.tick_lateness.count == 5
    assert actor.tick_lateness.counts[0] == 5
    batch = receive.receive_nowait()
    assert (batch.source, batch.status_code) == ("rest", 200)
    assert orjson.loads(batch.frames[0]) == [{"price": "1.5"}, {"price": "1.6"}]
    actor.request_stop()


async def test_slow_responses_skip_ticks_never_burst(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await trio.sleep(2.5)
        return httpx.Response(200, json={"a": 1})

    actor, _, times = poller(slow, spec(1000))
    nursery.start_soon(actor.run)
    await trio.sleep(9.9)
    assert times == [0.0, 3.0, 6.0, 9.0]  # one in flight; the grid is kept
    assert actor.skipped_ticks == 6
    actor.request_stop()


async def test_429_waits_at_least_retry_after(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    calls = 0

    async def limited(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(429, headers={"Retry-After": "7"})
        return httpx.Response(200, json={})

    actor, _, times = poller(limited, spec(1000))
    nursery.start_soon(actor.run)
    await trio.sleep(9.5)
    assert times[:2] == [0.0, 7.0]
    assert actor.errors == 1
    assert actor.last_status_code == 200
    actor.request_stop()


async def test_5xx_and_network_errors_retry_with_capped_backoff(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    calls = 0

    async def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("boom https://api.example.com/?apikey=SECRET", request=request)
        if calls == 2:
            return httpx.Response(503)
        return httpx.Response(200, json={"ok": True})

    actor, receive, times = poller(flaky, spec(60_000))
    nursery.start_soon(actor.run)
    await trio.sleep(10)
    assert len(times) == 3
    assert times[1] - times[0] <= 0.5
    assert times[2] - times[1] <= 1.0
    assert receive.receive_nowait().status_code == 200
    assert actor.errors == 2
    assert actor.last_error == "HTTP 503"
    assert "SECRET" not in repr(actor.statistics())
    actor.request_stop()


async def test_4xx_is_an_error_without_retry_and_big_bodies_are_refused(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def not_found(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404)

    actor, receive, times = poller(not_found, spec(1000))
    nursery.start_soon(actor.run)
    await trio.sleep(0.5)
    assert times == [0.0]
    assert actor.last_error == "HTTP 404"
    actor.request_stop()

    async def huge(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"[" + b"1," * 5000 + b"1]")

    big, receive, _ = poller(huge, spec(1000), max_response_bytes=1000)
    nursery.start_soon(big.run)
    await trio.sleep(0.5)
    assert big.last_error == "response larger than 1000 bytes"
    assert receive.statistics().current_buffer_used == 0
    big.request_stop()


@pytest.mark.parametrize("code", [401, 403])
async def test_refused_credentials_are_an_error_state_on_a_long_backoff(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    code: int,
) -> None:
    answers = [code, code, code, 200]

    async def refusing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(answers.pop(0) if answers else 200, json=[{"price": "1"}])

    actor, receive, times = poller(refusing, spec(1000))
    nursery.start_soon(actor.run)
    await trio.sleep(3 * PERMANENT_BACKOFF - 1)
    # Not once a second for the next fifteen minutes: once per backoff.
    assert times == [0.0, PERMANENT_BACKOFF, 2 * PERMANENT_BACKOFF]
    assert actor.status == "error"
    assert actor.last_error == f"HTTP {code}: the source refuses these credentials"
    said = [r for r in caplog.records if "refuses these credentials" in r.getMessage()]
    assert len(said) == 1  # said once per state change, not once per attempt
    await trio.sleep(2)
    assert actor.status == "running"  # it answers again: back to the normal schedule
    assert receive.statistics().current_buffer_used >= 1
    actor.request_stop()


async def test_requests_are_signed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[httpx.Request] = []

    async def capture(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    actor, _, _ = poller(
        capture,
        spec(1000, auth_type="HMAC", auth_options={"preset": "binance"}),
        credentials=Credentials(api_key="k", api_secret="s"),
        headers={"X-Custom": "v"},
        query_params={"recvWindow": "5000"},
    )
    nursery.start_soon(actor.run)
    await trio.sleep(0.5)
    [request] = seen
    assert request.headers["X-MBX-APIKEY"] == "k"
    assert request.headers["X-Custom"] == "v"
    query = request.url.query.decode()
    assert query.startswith("symbol=BTC&recvWindow=5000&timestamp=")
    assert "&signature=" in query
    actor.request_stop()


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("120", 0) == 120
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert retry_after_seconds("soon", 0) is None
    assert retry_after_seconds(None, 0) is None
