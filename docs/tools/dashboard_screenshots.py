"""Regenerate the dashboard screenshots in docs/img/ (used by docs/dashboard.md).

Starts `portway demo` on free ports, sends some traffic (including errors), then opens each
dashboard page in headless Chromium and saves a PNG. Needs Debian's chromium and Playwright
for Python (`apt-get install chromium && pip install playwright`).

    python docs/tools/dashboard_screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

PAGES = ["overview", "routes", "upstreams", "consumers", "config", "errors", "cache"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


async def main(out: Path) -> None:
    from playwright.async_api import async_playwright

    env = dict(os.environ)
    names = ["PORTWAY_PORT", "PORTWAY_ADMIN_PORT", "DEMO_USERS_PORT", "DEMO_ORDERS_PORT"]
    names += ["DEMO_PRODUCTS_PORT", "DEMO_FLAKY_PORT"]
    for k in names:
        env[k] = str(_free_port())
    env["PORTWAY_ADMIN_TOKEN"] = token = "screenshot-token"
    proc = subprocess.Popen(
        [sys.executable, "-m", "portway", "demo"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        while "Ctrl-C" not in proc.stdout.readline():
            pass
        base = f"http://127.0.0.1:{env['PORTWAY_PORT']}"
        for i in range(60):
            for path in ("/users", "/orders/7", "/cached", "/flaky", "/secure", "/limited"):
                _get(base + path, {"apikey": "demo-key"} if i % 2 else {})
        _get(base + "/nowhere")
        out.mkdir(parents=True, exist_ok=True)
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1366, "height": 860})
            await page.goto(f"http://127.0.0.1:{env['PORTWAY_ADMIN_PORT']}/dashboard")
            await page.fill("#token", token)
            await page.press("#token", "Enter")
            await page.wait_for_selector('[data-stat="Workers"]')
            for name in PAGES:
                await page.click(f'a[data-page="{name}"]')
                await page.wait_for_selector("#live:not(:empty)")
                await page.wait_for_timeout(2500)  # one refresh, so live figures are drawn
                await page.screenshot(path=str(out / f"dashboard-{name}.png"), full_page=False)
                print(f"wrote {out / f'dashboard-{name}.png'}")
            await browser.close()
    finally:
        proc.terminate()
        proc.wait(15)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "img")
    asyncio.run(main(ap.parse_args().out))
