"""A real browser (headless Chromium driven by Playwright) signs in through the provider's
login page and reaches the protected upstream, then signs out."""

from __future__ import annotations

import shutil

import orjson
import pytest

from tests.helpers import run_upstream
from tests.plugins.oidc.conftest import Idp, gateway_config, oidc_config, run_gateway_on

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


async def test_chromium_logs_in_through_the_provider(idp: Idp) -> None:
    from playwright.async_api import async_playwright

    # the browser talks plain HTTP to 127.0.0.1, where it would not send a Secure cookie back
    cfg = oidc_config(idp, session={"cookie": {"name": "pw_session", "secure": False}})
    async with (
        run_upstream() as up,
        run_gateway_on(idp.gateway_port, gateway_config(up.url, [{"name": "oidc", "config": cfg}])),
    ):
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                page = await browser.new_page()
                await page.goto(idp.gateway + "/reports?year=2026")
                # the provider's own login page (devInteractions)
                await page.wait_for_selector('input[name="login"]')
                assert page.url.startswith(idp.issuer)
                await page.fill('input[name="login"]', "carol")
                await page.fill('input[name="password"]', "secret")
                await page.click('button[type="submit"]')
                # its consent page
                await page.wait_for_selector('button[type="submit"]')
                await page.click('button[type="submit"]')
                await page.wait_for_url(idp.gateway + "/reports?year=2026")
                echo = orjson.loads(await page.inner_text("body"))
                headers = dict(echo["headers"])
                assert echo["path"] == "/reports" and echo["query"] == "year=2026"
                assert headers["x-consumer-id"] == "carol"
                assert headers["x-user-email"] == "carol@example.test"
                assert headers["authorization"].startswith("Bearer ")
                cookies = {c["name"]: c for c in await page.context.cookies()}
                assert cookies["pw_session"]["httpOnly"] is True
                assert cookies["pw_session"]["sameSite"] == "Lax"
                # sign out: the gateway drops its session and sends the browser to the
                # provider's end-session page; confirming there ends the provider's session
                # and brings the browser back to the gateway, which needs a login again
                await page.goto(idp.gateway + "/logout")
                await page.wait_for_selector('button[name="logout"]')
                assert page.url.startswith(idp.issuer + "/session/end")
                names = {c["name"] for c in await page.context.cookies(idp.gateway)}
                assert "pw_session" not in names
                await page.click('button[name="logout"]')
                await page.wait_for_selector('input[name="login"]')
                assert page.url.startswith(idp.issuer)
                # everything that reached the upstream came with carol's identity
                assert up.requests
                assert all(r.headers.get("x-consumer-id") == "carol" for r in up.requests)
            finally:
                await browser.close()


pytestmark = pytest.mark.timeout(120)
