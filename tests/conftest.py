"""Fixtures: a real server (``app_server``) and headless Chromium (``browser``, ``page``); the lesson-claims check,
started in the background when the session starts (``claims_check``). Helpers are in helpers.py."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# One disk cache per test run, never the user's (~/.cache/resviz): what one run stores (a replayed race, a trained
# pair, the class's state) cannot change what the next run sees, and two runs at once do not meet. Servers the
# tests start inherit it.
TEST_CACHE = os.environ["RESVIZ_CACHE"] = tempfile.mkdtemp(prefix="resviz-tests-")

from helpers import ClaimsCheck, served
from resviz.tools import browser as chromium

torch.set_num_threads(1)  # tiny models: one thread is faster and leaves the other core to the test server


def _run_as_a_browser_would(run):
    """AppTest sends the query string it was last given with every rerun, where a browser's address bar follows
    the widgets bound to it (``bind="query-params"``). So a link's settings are read on the first run, as in a
    browser; on later runs the widgets' values (set by a test) are the settings, not a stale link."""
    def wrapped(self, *args, **kwargs):
        if getattr(self, "_ran_once", False):
            self.query_params.clear()
        self._ran_once = True
        return run(self, *args, **kwargs)
    return wrapped


def pytest_configure(config):
    from streamlit.testing.v1 import AppTest

    AppTest.run = _run_as_a_browser_would(AppTest.run)

    # Students see redacted errors (.streamlit/config.toml); tests want the real message when a page breaks.
    from streamlit import config as st_config

    st_config.set_option("client.showErrorDetails", "full")


def pytest_unconfigure(config):
    for check in CLAIMS_CHECKS.values():
        check.stop()
    shutil.rmtree(TEST_CACHE, ignore_errors=True)


# --- the lesson-claims check (tests/test_claims.py) runs in the background from the session's start ----------------
CLAIMS_CHECKS: dict[str, ClaimsCheck] = {}  # lesson -> the child process checking its claims
# A process each, so the check keeps both cores busy once the rest of the suite is done: the race (its seeds on two
# threads); lesion and paths (one CI pair per seed, trained once for both); one for the other lessons.
CLAIMS_GROUPS = (("training",), ("lesion", "paths"))


def _checks_claims(item) -> bool:
    return "claims_check" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config, items):
    """The tests that read the background check's claims run last: the check has the whole session to finish."""
    items.sort(key=_checks_claims)  # stable: every other test keeps its place


def pytest_collection_finish(session):
    lessons = [item.callspec.params["lesson"] for item in session.items if _checks_claims(item)]
    if not lessons or session.config.option.collectonly:
        return
    folder = Path(tempfile.mkdtemp(prefix="claims-", dir=TEST_CACHE))
    groups = [[name for name in group if name in lessons] for group in CLAIMS_GROUPS]
    groups.append([name for name in lessons if not any(name in group for group in CLAIMS_GROUPS)])
    for group in filter(None, groups):
        check = ClaimsCheck(group, folder)
        CLAIMS_CHECKS.update({name: check for name in group})


@pytest.fixture
def claims_check():
    """``lesson -> its claims`` from the check started in the background (waits for it to finish). The claims tests
    run last: from the first, the checks run at the suite's priority."""
    def claims(lesson: str):
        for check in set(CLAIMS_CHECKS.values()):
            check.hurry()
        return CLAIMS_CHECKS[lesson].claims(lesson)
    return claims


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """``streamlit run app.py`` on a free loopback port; yields its base URL."""
    with served(log_path=tmp_path_factory.mktemp("server") / "streamlit.log") as (_, url):
        yield url


@pytest.fixture(scope="session")
def browser():
    reason = chromium.missing()
    if reason:
        pytest.skip(f"{reason}; CI installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = chromium.launch(p)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport=chromium.VIEWPORT)
    pg = ctx.new_page()
    yield pg
    ctx.close()


@pytest.fixture
def quiet_bell(monkeypatch):
    """ui_classroom's bell without its thread: nothing rings, and nothing reads the class, after the test ends (a
    started bell reads the class four times a second, and read a later test's class)."""
    from resviz import ui_classroom

    bell = ui_classroom.Bell()
    bell._thread = "not started"  # a test rings by hand
    monkeypatch.setattr(ui_classroom, "_bell", bell)
    return bell
