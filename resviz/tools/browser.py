"""Headless Chromium against the running app (playwright): launch it, wait for a page to settle, look at it.

    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = launch(p)
        pg = browser.new_page(viewport=VIEWPORT)
        open_page(pg, url, "training")
        screenshot(pg, "/tmp/training.png")
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 900}  # a classroom projector's first screen
MAX_SHOT_HEIGHT = 12_000  # px: a full-page shot stops here


def missing() -> str | None:
    """Why the browser cannot run here (no Chromium, no playwright), or None when it can."""
    if not os.path.exists(CHROMIUM):
        return f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements.txt)"
    return None


def launch(playwright):
    """Headless Chromium from the system (``playwright install`` is never needed)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)


def running(pg) -> bool:
    """True while Streamlit shows a script run in progress."""
    return pg.locator('[data-testid="stStatusWidget"]').count() > 0


def wait_idle(pg, timeout_ms: int = 90_000) -> None:
    """Wait until the app has rendered and no script run is in progress (three quiet looks in a row)."""
    pg.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    pg.wait_for_selector('[data-testid="stSidebar"]', timeout=timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    quiet = 0
    while time.monotonic() < deadline and quiet < 3:
        quiet = 0 if running(pg) else quiet + 1
        pg.wait_for_timeout(400)


def open_page(pg, base_url: str, path: str = "", timeout_ms: int = 90_000):
    """Open ``base_url/path`` and wait for the app to settle."""
    pg.goto(f"{base_url}/{path}", timeout=timeout_ms)
    wait_idle(pg, timeout_ms)
    return pg


def page_exceptions(pg) -> list[str]:
    """Texts of every exception box Streamlit shows on the page."""
    return [e.inner_text() for e in pg.locator('[data-testid="stException"]').all()]


def nav_links(pg) -> list[str]:
    """The labels of the sidebar's page navigation, in order."""
    return [a.inner_text().strip() for a in pg.locator('[data-testid="stSidebarNav"] a').all()]


def watch_requests(pg) -> list[str]:
    """A list that fills with the URL of every request the page makes from now on (``page.on("request")``)."""
    seen: list[str] = []
    pg.on("request", lambda request: seen.append(request.url))
    return seen


def foreign(urls: list[str], base_url: str) -> list[str]:
    """The URLs that go to another host than the app's (data: and blob: URLs stay in the page)."""
    home = urlsplit(base_url).netloc
    return [u for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss") and urlsplit(u).netloc != home]


def screenshot(pg, path: str | Path, full: bool = False) -> Path:
    """Save a PNG of the first screen (or, with ``full``, of the whole page) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not full:
        pg.screenshot(path=str(path))
        return path
    # Streamlit scrolls inside its own container, so grow the viewport to the content first.
    height = pg.evaluate("() => Math.max(document.body.scrollHeight, ...Array.from("
                         "document.querySelectorAll('[data-testid=stMain], [data-testid=stAppViewContainer]'),"
                         " e => e.scrollHeight))")
    size = pg.viewport_size
    pg.set_viewport_size({"width": size["width"], "height": min(int(height) + 40, MAX_SHOT_HEIGHT)})
    wait_idle(pg)  # charts re-layout to the new size
    pg.screenshot(path=str(path), full_page=True)
    pg.set_viewport_size(size)
    return path
