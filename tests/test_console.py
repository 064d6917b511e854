"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright.

The whole service runs on port 0 behind ``SLUICE_API_TOKEN``, with the local fake exchange
and REST endpoint as sources. A person's path through it: give the token, create a REST
and a WebSocket connector from the form (seeing a 422 next to its field first), start one,
watch counters, the tail and the chart move, stop it, find the records on the data page
and download them as CSV, look at the system page; a connector named like an XSS attack
shows as text, the page never breaks its Content-Security-Policy, and the tab stays
responsive while the feed runs (see ``responsive``). Screenshots of each page
go to ``tests/artifacts/console/`` (``SLUICE_ARTIFACTS`` overrides it).

Chromium comes from Debian's ``chromium`` package; the set-up installs it when it is
missing and this runs as root (``.ci/run`` does the same).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from engine.config import Settings
from server.serve import Service, serve

from .conftest import evolve
from .fake_exchange import FakeExchange
from .fake_rest import FakeRest

pytestmark = pytest.mark.e2e

TOKEN = "console-test-token"
XSS = "<img src=x onerror=alert(1)>"
ARTIFACTS = (
    Path(os.environ.get("SLUICE_ARTIFACTS", Path(__file__).parent / "artifacts")) / "console"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# How long the tab's main-thread tasks may take. A long task is wall time: on this shared
# two-core machine Chromium's main thread is preempted by the engine, the firehose and
# PostgreSQL it is tested against, and single tasks of 100 to 250 ms came and went between
# runs of the same code (2026-12-06: [51, 53, 50, 134], [175, 118, 130], [250, 114, 115]).
# The bound catches a page whose own work blocks the tab — the 1,000-row table rebuilt in
# every refresh, an unbounded tail — which makes *most* of its tasks long, not one: the
# median task must stay under LONG_TASK_MS and none may reach a second.
LONG_TASK_MS = 250


def responsive(tasks: list[float]) -> bool:
    """No long task of a second, and the median under ``LONG_TASK_MS``."""
    ordered = sorted(tasks)
    return not ordered or (ordered[-1] < 1000 and ordered[len(ordered) // 2] < LONG_TASK_MS)


# Installed before any page script runs: collects long tasks and CSP violations.
WATCH = """
window.__longTasks = [];
window.__cspViolations = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__longTasks.push(e.duration);
}).observe({type: "longtask", buffered: true});
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"], check=True, capture_output=True
        )
        found = shutil.which("chromium")
    if found is None:
        pytest.fail("Debian's chromium is needed for the console test: apt-get install chromium")
    return found


async def test_the_console_in_a_real_browser(
    nursery: trio.Nursery, settings: Settings, exchange: FakeExchange
) -> None:
    rest: FakeRest = await nursery.start(FakeRest(per_request=2).run)
    settings = evolve(settings, api_token=TOKEN)
    service: Service = await nursery.start(partial(serve, settings, handle_signals=False))
    executable = await trio.to_thread.run_sync(chromium)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with trio.fail_after(180):
        seen = await trio.to_thread.run_sync(
            partial(
                drive,
                executable,
                service.url,
                rest.url(),
                exchange.url("/paced?count=40000&rate=2000"),
            )
        )
    assert seen["dialogs"] == []  # the XSS name never ran
    assert seen["csp"] == []  # nothing the page does breaks its own policy
    assert seen["errors"] == []
    assert responsive(seen["long_tasks"]), seen["long_tasks"]
    assert seen["tail_rows"] > 0
    assert seen["tail_rows"] <= 200  # the tail keeps a bounded number of rows
    assert seen["stored_after"] > seen["stored_before"]  # counters moved
    header = seen["csv"][0]
    assert header[:2] == ["id", "connector_id"]
    assert header[-1] == "data"
    assert len(seen["csv"]) > 10
    exchange = header.index("exchange")
    assert all(row[exchange] == "binance" for row in seen["csv"][1:])


def drive(executable: str, base: str, rest_url: str, ws_url: str) -> dict[str, Any]:
    """The browser session (Playwright's sync API, in a worker thread)."""
    from playwright.sync_api import expect

    seen: dict[str, Any] = {"dialogs": [], "errors": []}
    with _page(executable, seen, accept_downloads=True) as page:
        page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
        page.goto(base + "/")
        page.fill("#token-input", TOKEN)
        page.click("#token-form button")
        expect(page.locator("#connectors")).to_be_visible()

        # A REST connector, with a 422 shown next to the field it names first.
        page.click("text=New connector")
        page.fill("#f-name", "REST trades")
        page.fill("#f-api_url", rest_url)
        page.fill("#f-polling_interval", "5")
        page.click("#connector-form button[type=submit]")
        error = page.locator("[data-error-for=polling_interval]")
        expect(error).not_to_be_empty()
        seen["field_error"] = error.inner_text()
        page.screenshot(path=str(ARTIFACTS / "form-422.png"), full_page=True)
        page.fill("#f-polling_interval", "1000")
        page.click("#connector-form button[type=submit]")
        expect(page.locator("h1")).to_have_text("REST trades")

        # A WebSocket connector whose name is an XSS attempt.
        page.goto(base + "/#/connectors/new")
        page.fill("#f-name", XSS)
        page.fill("#f-api_url", ws_url)
        page.fill("#f-exchange", "binance")
        page.click("#connector-form button[type=submit]")
        expect(page.locator("h1")).to_have_text(XSS)
        page.click("#start")
        expect(page.locator("#tail-rows tr").first).to_be_visible(timeout=20_000)
        expect(page.locator("#chart canvas").first).to_be_visible(timeout=10_000)
        stored = page.locator(".card:has(.label:text('records stored')) .value")
        expect(stored).not_to_have_text("0", timeout=10_000)
        seen["stored_before"] = _number(stored.inner_text())
        page.wait_for_timeout(3000)  # the feed runs: the tail and the chart keep drawing
        seen["stored_after"] = _number(stored.inner_text())
        seen["tail_rows"] = page.locator("#tail-rows tr").count()
        page.screenshot(path=str(ARTIFACTS / "connector-detail.png"), full_page=True)
        page.click("#stop")
        expect(page.locator(".card .value.status-stopped")).to_be_visible(timeout=15_000)
        seen["long_tasks"] = page.evaluate("window.__longTasks")

        # The table: the XSS name is text, not an element.
        page.goto(base + "/#/connectors")
        expect(page.locator("#connectors tbody tr")).to_have_count(2)
        table = page.locator("#connectors")
        assert XSS in table.inner_text()
        assert table.locator("img").count() == 0
        page.screenshot(path=str(ARTIFACTS / "connectors.png"), full_page=True)

        # The data page, and the CSV of its filter.
        page.goto(base + "/#/data")
        page.fill("#d-exchange", "binance")
        page.click("#data-form button[type=submit]")
        expect(page.locator("#data-results tbody tr").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "data.png"), full_page=True)
        with page.expect_download() as download:
            page.click("#data-csv")
        text = Path(download.value.path()).read_text()
        seen["csv"] = list(csv.reader(io.StringIO(text)))

        page.goto(base + "/#/system")
        expect(page.locator("#sys-db dl").first).to_be_visible()
        expect(page.locator("#sys-pipeline dl").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "system.png"), full_page=True)
        seen["csp"] = page.evaluate("window.__cspViolations")
    return seen


def _number(text: str) -> int:
    return int(text.replace(",", "") or 0)


#: The records the live tail says it received, as a script expression (for conditions).
TAIL_COUNT = (
    "Number(document.querySelector('#tail-count').textContent.split(' ')[0].replace(/,/g, ''))"
)


def _tail_count(page: Any) -> int:
    """The records the live tail says it received."""
    return int(page.evaluate(TAIL_COUNT))


@contextlib.contextmanager
def _page(executable: str, seen: dict[str, Any], **options: Any) -> Iterator[Any]:
    """A page in headless Chromium watching long tasks (``WATCH``), its script errors
    going to ``seen["errors"]``; the browser closes after."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, **options)
        page.add_init_script(WATCH)
        page.on("pageerror", lambda e: seen["errors"].append(str(e)))
        yield page
        browser.close()


CONNECTORS = 1_000
FEED_RATE = 30_000


@contextlib.asynccontextmanager
async def firehose(seconds: int = 20) -> AsyncIterator[int]:
    """The bench's firehose at ``FEED_RATE`` for ``seconds``, a process of its own (killed
    when the block ends); yields its port."""
    count = str(FEED_RATE * seconds)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "bench.firehose", "--count", count, "--rate", str(FEED_RATE)],
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        yield int((await process.stdout.receive_some(100)).split()[1])
    finally:
        process.kill()
        await process.wait()


async def test_the_console_stays_responsive_with_1000_connectors_and_a_30k_feed(
    nursery: trio.Nursery, settings: Settings
) -> None:
    """The connectors table with 1,000 rows refreshed in place, and a connector's detail
    page with its tail and chart under a 30,000 msg/s feed (the bench's firehose, its own
    process): responsive after the first render (see ``responsive``), the tail bounded."""
    service: Service = await nursery.start(partial(serve, settings, handle_signals=False))
    async with firehose() as port:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            for i in range(CONNECTORS - 1):
                body = {"name": f"idle {i:04d}", "api_url": f"ws://127.0.0.1:{port}/binance"}
                assert (await client.post("/api/connectors", json=body)).status_code == 201
            body = {"name": "firehose", "api_url": f"ws://127.0.0.1:{port}/binance"}
            feed = (await client.post("/api/connectors", json=body)).json()["connector_id"]
        executable = await trio.to_thread.run_sync(chromium)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with trio.fail_after(120):
            seen = await trio.to_thread.run_sync(
                partial(drive_under_load, executable, service.url, feed)
            )
    print("console under load:", {k: v for k, v in seen.items()})
    assert seen["rows"] == CONNECTORS
    assert seen["errors"] == []
    # The tail kept going at 30,000 msg/s: it never closed for good. (On a loaded two-core
    # machine the tab can fall SLUICE_REALTIME_MAX_LAG records behind; it then skips ahead,
    # "skips" says how often, and the test below holds that path.)
    assert seen["notice"] == ""
    # At least a second of the feed in the 5 s watched (a fast day: all of it, ≈ 160,000;
    # a slow, loaded one: ≈ 67,000 to 110,000).
    assert seen["tail_received"] > FEED_RATE
    assert seen["tail_rows"] <= 200
    assert responsive(seen["table_long_tasks"]), seen["table_long_tasks"]
    assert responsive(seen["detail_long_tasks"]), seen["detail_long_tasks"]


def drive_under_load(executable: str, base: str, feed: str) -> dict[str, Any]:
    from playwright.sync_api import expect

    seen: dict[str, Any] = {"errors": []}
    with _page(executable, seen) as page:
        page.goto(base + "/")
        expect(page.locator("#connectors tbody tr")).to_have_count(CONNECTORS, timeout=30_000)
        page.evaluate("window.__longTasks = []")  # the first render of 1,000 rows aside
        page.locator(f"#connectors tr[data-id='{feed}'] button.start").click()
        page.wait_for_timeout(6000)  # three refreshes of the whole table while the feed runs
        seen["table_long_tasks"] = page.evaluate("window.__longTasks")
        seen["rows"] = page.locator("#connectors tbody tr").count()
        page.screenshot(path=str(ARTIFACTS / "connectors-1000.png"))
        page.goto(base + "/#/connectors/" + feed)
        expect(page.locator("#tail-rows tr").first).to_be_visible(timeout=20_000)
        page.evaluate("window.__longTasks = []")
        page.wait_for_timeout(5000)
        seen["detail_long_tasks"] = page.evaluate("window.__longTasks")
        seen["tail_rows"] = page.locator("#tail-rows tr").count()
        seen["tail_received"] = _tail_count(page)
        seen["notice"] = page.locator("#notice").inner_text()
        seen["skips"] = page.locator("#tail-skips").inner_text()
        page.screenshot(path=str(ARTIFACTS / "connector-detail-30k.png"), full_page=True)
    return seen


async def test_a_tail_that_falls_behind_skips_ahead_and_goes_on(
    nursery: trio.Nursery, settings: Settings
) -> None:
    """A tab cut off as lagged (1008) opens a new socket at the live edge and says so,
    instead of a dead tail and "reload to reconnect": forced here with a lag bound of 100
    records under a 30,000 msg/s feed, and the page's main thread held busy (as a tab in
    the background or a slow machine holds it) until the server cuts the tail off: a
    headless browser on an idle machine keeps up with the feed and would never fall
    behind on its own."""
    service: Service = await nursery.start(
        partial(serve, evolve(settings, realtime_max_lag=100), handle_signals=False)
    )
    async with firehose(seconds=90) as port:  # live until the end, however many rounds
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            body = {"name": "firehose", "api_url": f"ws://127.0.0.1:{port}/binance"}
            feed = (await client.post("/api/connectors", json=body)).json()["connector_id"]
            assert (await client.post(f"/api/connectors/{feed}/start")).status_code == 200
        executable = await trio.to_thread.run_sync(chromium)
        with trio.fail_after(90):
            seen = await trio.to_thread.run_sync(
                partial(drive_skipping, executable, service.url, feed)
            )
    print("tail skipping ahead:", seen)
    assert seen["errors"] == []
    assert seen["skips"].startswith("fell behind, skipped ahead")
    assert seen["notice"] == ""
    assert seen["received_after"] > seen["received_before"]  # still live after skipping


#: Most rounds of holding the tab's main thread before the test gives up on a skip.
HOLD_ROUNDS = 6


def drive_skipping(executable: str, base: str, feed: str) -> dict[str, Any]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    seen: dict[str, Any] = {"errors": []}
    with _page(executable, seen) as page:
        page.goto(base + "/#/connectors/" + feed)
        skips = page.locator("#tail-skips")
        page.wait_for_function(f"() => {TAIL_COUNT} > 0", timeout=30_000)
        # Each round the tab stops reading for 3 s while the feed goes on; then come the
        # buffered frames, the 1008 and the new socket.
        for seen["rounds"] in range(1, HOLD_ROUNDS + 1):
            page.evaluate("() => { const end = Date.now() + 3000; while (Date.now() < end); }")
            with contextlib.suppress(PlaywrightTimeoutError):
                skips.wait_for(state="visible", timeout=5_000)
                break
        seen["received_before"] = _tail_count(page)
        page.wait_for_function(f"() => {TAIL_COUNT} > {seen['received_before']}", timeout=10_000)
        seen["received_after"] = _tail_count(page)
        seen["skips"] = page.locator("#tail-skips").inner_text()
        seen["notice"] = page.locator("#notice").inner_text()
        page.screenshot(path=str(ARTIFACTS / "connector-detail-skipping.png"), full_page=True)
    return seen
