"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright)
against a real ``portway run`` process, real upstreams and the real admin API."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from portway.http.client import simple_request
from tests.helpers import free_port, run_upstream, wait_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
TOKEN = "dash-s3cret"


def _config(port: int, admin: int, app_url: str, flaky_port: int, extra_route: bool) -> str:
    extra = '  - {name: r-new, match: {paths: ["/new"]}, upstream: app}\n' if extra_route else ""
    return f"""\
listeners: [{{name: public, address: "127.0.0.1:{port}"}}]
admin: {{address: "127.0.0.1:{admin}", token: "{TOKEN}"}}
consumers:
  - {{username: alice, credentials: {{key_auth: [{{key: alice-key}}]}}}}
upstreams:
  app:
    targets: [{{url: "{app_url}"}}]
  flaky:
    targets: [{{url: "http://127.0.0.1:{flaky_port}"}}]
    health:
      active: {{path: /, interval: 200ms, timeout: 500ms, healthy_after: 1, unhealthy_after: 1}}
routes:
  - {{name: r-app, match: {{paths: ["/app"]}}, upstream: app}}
  - name: r-secure
    match: {{paths: ["/secure"]}}
    upstream: app
    plugins:
      - {{name: key_auth}}
      - {{name: rate_limit, config: {{limits: [{{rate: 5, per: 60s}}], key: [consumer]}}}}

  - {{name: r-flaky, match: {{paths: ["/flaky"]}}, upstream: flaky}}
{extra}"""


async def _start_flaky(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await wait_port(port)
    return proc


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[dict[str, object]]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed (apt-get install chromium; .ci/run does it)")
    async with run_upstream() as app:
        port, admin, flaky_port = free_port(), free_port(), free_port()
        flaky = await _start_flaky(flaky_port, tmp_path)
        cfg = tmp_path / "portway.yaml"
        cfg.write_text(_config(port, admin, app.url, flaky_port, False))
        gw = subprocess.Popen(
            [sys.executable, "-m", "portway", "run", "-c", str(cfg), "--workers", "1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_port(port)
            await wait_port(admin)
            yield {
                "port": port,
                "admin": admin,
                "app": app,
                "flaky": flaky,
                "flaky_port": flaky_port,
                "cfg": cfg,
            }
        finally:
            gw.send_signal(signal.SIGTERM)
            await asyncio.to_thread(gw.wait, 20)
            if flaky.poll() is None:
                flaky.kill()
                flaky.wait()


async def test_dashboard_in_a_browser(stack: dict[str, object]) -> None:
    from playwright.async_api import async_playwright, expect

    admin = stack["admin"]
    port = stack["port"]
    base = f"http://127.0.0.1:{admin}/dashboard"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            # a broken page (a CSP violation, a script error) fails the test
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on(
                "console",
                # (answers the flow expects — the refused token's 401, the invalid config's
                # 422 — are logged by the browser as failed loads, as they should be)
                lambda m: (
                    problems.append(m.text)
                    if m.type == "error" and "Failed to load resource" not in m.text
                    else None
                ),
            )
            await page.goto(base)
            # signing in: the token is asked once and never lands in the URL
            await expect(page.locator("#login")).to_be_visible()
            await page.fill("#token", "wrong")
            await page.press("#token", "Enter")
            await expect(page.locator("#login-error")).to_contain_text("refused")
            await page.fill("#token", TOKEN)
            await page.press("#token", "Enter")
            await expect(page.locator('[data-stat="Workers"] .v')).to_have_text("1")
            assert TOKEN not in page.url

            # a route appears after a config applied from the config page
            await page.click('a[data-page="routes"]')
            await expect(page.locator('tr[data-route="r-app"]')).to_be_visible()
            await expect(page.locator('tr[data-route="r-new"]')).to_have_count(0)
            cfg_text = _config(port, admin, stack["app"].url, stack["flaky_port"], True)  # type: ignore[attr-defined]
            await page.click('a[data-page="config"]')
            await expect(page.locator("#config-text")).to_have_value(re.compile("r-secure"))
            await page.fill("#config-text", cfg_text)
            await page.click("#btn-diff")
            await expect(page.locator("#config-diff")).to_contain_text("+  - {name: r-new")
            await page.click("#btn-apply")
            await expect(page.locator("#config-result")).to_contain_text("live")
            await page.click('a[data-page="routes"]')
            await expect(page.locator('tr[data-route="r-new"]')).to_be_visible()

            # the "test a request" box explains without sending
            await page.fill("#x-path", "/new/thing")
            await page.click('#explain-form button[type="submit"]')
            await expect(page.locator("[data-explain-route]")).to_have_text("r-new")

            # a broken config is refused with the error at its line
            await page.click('a[data-page="config"]')
            broken = cfg_text.replace("upstream: flaky}", "upstream: nowhere}")
            bad_line = next(
                i + 1 for i, line in enumerate(broken.splitlines()) if "nowhere" in line
            )
            await page.fill("#config-text", broken)
            await page.click("#btn-validate")
            issue = page.locator(f'#config-result li[data-line="{bad_line}"]')
            await expect(issue).to_contain_text("nowhere")
            await expect(page.locator(".gutter .bad")).to_have_text(str(bad_line))

            # a gateway-made error shows up in the recent-errors list, with its explain record
            r = await simple_request("GET", f"http://127.0.0.1:{port}/secure")
            assert r.status == 401
            await page.click('a[data-page="errors"]')
            row = page.locator("#error-table tr", has_text="r-secure")
            await expect(row.first).to_be_visible()
            await expect(row.first).to_contain_text("401")
            await row.first.locator("a").click()
            await expect(page.locator("#explain-record")).to_contain_text('"/secure"')

            # a consumer's rate-limit state: two of five spent
            for _ in range(2):
                r = await simple_request(
                    "GET", f"http://127.0.0.1:{port}/secure", headers=[("apikey", "alice-key")]
                )
                assert r.status == 200
            await page.click('a[data-page="consumers"]')
            await page.locator('tr[data-consumer="alice"] button').click()
            await expect(page.locator("#consumer-limits [data-remaining]")).to_have_text("3")

            # a killed target turns unhealthy on the upstreams page
            await page.click('a[data-page="upstreams"]')
            flaky_row = page.locator('[data-upstream="flaky"] [data-health]')
            await expect(flaky_row).to_contain_text("healthy")
            stack["flaky"].kill()  # type: ignore[attr-defined]
            await expect(flaky_row).to_contain_text("unhealthy", timeout=15_000)

            # the overview counts the traffic
            for _ in range(5):
                await simple_request("GET", f"http://127.0.0.1:{port}/app")
            await page.click('a[data-page="overview"]')
            await expect(page.locator('[data-stat="requests"] .v')).to_have_text(
                re.compile(r"^[1-9][0-9]*$")
            )
            assert not problems, problems
        finally:
            await browser.close()
