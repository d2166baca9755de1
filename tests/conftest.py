"""Shared fixtures: tiny deterministic inputs, AppTest helpers, and a real server + headless Chromium."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
# Screenshots go to a temp folder; RESVIZ_SCREENSHOTS=assets/screenshots refreshes the README's.
SCREENSHOTS = Path(os.environ.get("RESVIZ_SCREENSHOTS", "/tmp/resviz-screenshots"))

torch.set_num_threads(1)  # tiny models: one thread is faster and leaves the other core to the test server


def pytest_configure(config):
    # Students see redacted errors (.streamlit/config.toml); tests want the real message when a page breaks.
    from streamlit import config as st_config

    st_config.set_option("client.showErrorDetails", "full")


def new_app(page: str | None = None, timeout: float = 60, sidebar: dict | None = None):
    """An AppTest of the whole app, run once, then switched to ``pages/<page>.py`` and run.

    AppTest reruns a page on its own, without app.py's sidebar, so the app-wide model is chosen before the
    first run: ``sidebar={"sel_family": "ImageNet", "sel_imagenet": "resnet50"}`` gives those sidebar widgets
    their values (by key); the page then reads the selection from session state.
    """
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    for key, value in (sidebar or {}).items():
        at.session_state[key] = value
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    return at


def no_exceptions(at) -> None:
    """Fail with the page's own text if it shows an exception or an error box."""
    assert not at.exception, [e.message for e in at.exception]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """``streamlit run app.py`` on a free loopback port; yields its base URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless=true",
           f"--server.port={port}", "--server.address=127.0.0.1", "--browser.gatherUsageStats=false"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"streamlit exited early:\n{log.read_text()}")
                time.sleep(0.5)
        else:
            pytest.fail(f"streamlit did not start:\n{log.read_text()}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium); CI installs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -r requirements.txt)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    yield pg
    ctx.close()


def wait_idle(pg, timeout_ms: int = 90_000) -> None:
    """Wait until the app has rendered and no script run is in progress."""
    pg.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    pg.wait_for_selector('[data-testid="stSidebar"]', timeout=timeout_ms)
    deadline = time.time() + timeout_ms / 1000
    quiet = 0
    while time.time() < deadline and quiet < 3:
        running = pg.locator('[data-testid="stStatusWidget"]').count() > 0
        quiet = 0 if running else quiet + 1
        pg.wait_for_timeout(400)


def open_page(pg, base_url: str, path: str = "", timeout_ms: int = 90_000):
    """Open ``base_url/path`` and wait for the app to settle."""
    pg.goto(f"{base_url}/{path}", timeout=timeout_ms)
    wait_idle(pg, timeout_ms)
    return pg


def page_exceptions(pg) -> list[str]:
    """Texts of every exception box Streamlit shows on the page."""
    return [e.inner_text() for e in pg.locator('[data-testid="stException"]').all()]


def screenshot(pg, name: str) -> Path:
    """Save a full-page PNG under SCREENSHOTS and return its path (open it and look)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # Streamlit scrolls inside its own container, so grow the viewport to the content first.
    height = pg.evaluate("() => Math.max(document.body.scrollHeight, ...Array.from("
                         "document.querySelectorAll('[data-testid=stMain], [data-testid=stAppViewContainer]'),"
                         " e => e.scrollHeight))")
    size = pg.viewport_size
    pg.set_viewport_size({"width": size["width"], "height": min(int(height) + 40, 12000)})
    pg.wait_for_timeout(500)
    pg.screenshot(path=str(path), full_page=True)
    pg.set_viewport_size(size)
    return path
