"""Playwright driving Debian's Chromium (by its executable path) on the real panel: live view, e-stop, screenshot.

Where the system has no Chromium (Ubuntu ships it as a snap only), Playwright's
own build is used if ``playwright install chromium`` has put it in place.

The broader browser tests (drive pad, token, say box, keyboard) are in
test_panel_browser.py (Selenium + apt's chromedriver); this one is the
Playwright check, and leaves a screenshot of the panel in ``tmp_path``.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.bridge_fixtures import requires_gcc
from tests.service_fixtures import live_server, sim_bundle, sim_runtime  # noqa: F401 (fixtures)

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")


def _playwright_chromium() -> str | None:
    """Playwright's own Chromium, if it has been installed (``playwright install chromium``)."""
    try:
        with playwright.sync_playwright() as p:
            path = p.chromium.executable_path
    except Exception:  # noqa: BLE001 - no driver or no browser: the test skips with the reason below
        return None
    return path if path and os.path.exists(path) else None


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or _playwright_chromium()
pytestmark = [requires_gcc, pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium: apt-get install chromium (Debian), or on Ubuntu "
                             ".venv/bin/playwright install --with-deps chromium")]


def test_panel_live_view_updates_and_estop_changes_the_state(live_server, tmp_path):  # noqa: F811
    url, _, runtime = live_server
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors, foreign = [], []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # the panel talks to this robot only: its HTTP port, and its e-stop listener's port
            local = (url, url.rsplit(":", 1)[0] + ":")
            page.on("request", lambda req: None if req.url.startswith(local) else foreign.append(req.url))
            page.goto(url + "/")
            live = page.locator("#live")
            page.wait_for_function("() => document.querySelector('#live').naturalWidth > 0", timeout=10_000)
            first = live.screenshot()
            time.sleep(1.0)
            assert live.screenshot() != first  # frames keep arriving (sensor noise, frame age text)
            page.wait_for_function("() => !document.querySelector('#frame-age').textContent.includes('–')",
                                   timeout=5_000)
            page.locator("#estop").click()
            page.wait_for_function("() => document.querySelector('#pill-state').textContent.includes('ESTOP')",
                                   timeout=5_000)
            assert runtime.link.wait_for_telemetry(lambda t: t.state.name == "ESTOP", timeout_s=2.0)
            shot = tmp_path / "panel.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            estop_port = page.locator('meta[name="estop-port"]').get_attribute("content")
            assert errors == [] and foreign == [] and estop_port and estop_port != url.rsplit(":", 1)[1]
        finally:
            browser.close()
    runtime.actuator.release_estop()
    runtime.actuator.request("clear_failsafe")
    runtime.link.wait_for_telemetry(lambda t: t.state.name == "DISARMED", timeout_s=2.0)
