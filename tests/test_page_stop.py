"""A page that ends its run early (its first screen drawn, a result still computing) keeps the clicks made meanwhile.

``st.stop()`` threw away a rerun the browser asked for while the page ran: on a loaded CI machine a student's
"Rejoin the class", pressed while the page waited on a result, did nothing (issue 21's follow test). Pages end with
``ui.stop_page()`` instead, which ``ui.run_page`` catches.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A fragment's button, and a page whose run is still going when that button is pressed: the run waits until the
# server holds the click's rerun (the condition, not a time), then ends the way a waiting lesson page ends.
CLICK_APP = '''
import time
from types import SimpleNamespace

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from resviz import ui


@st.fragment
def panel():
    if st.button("Rejoin", key="rejoin"):
        st.session_state["pressed"] = st.session_state.get("pressed", 0) + 1
    st.write(f"pressed {st.session_state.get('pressed', 0)} times")


def page():
    if not st.button("Start the long run", key="work"):
        return
    st.write("the page is running")
    requests = get_script_run_ctx().script_requests
    deadline = time.monotonic() + 120
    while requests._state.name != "RERUN" and time.monotonic() < deadline:  # the click has reached the server
        time.sleep(0.02)
    ui.stop_page()


st.sidebar.write("sidebar")  # what helpers.open_page waits for
panel()
ui.run_page(SimpleNamespace(run=page))
st.write("the frame's last line ran")
'''


def test_no_page_ends_with_st_stop():
    """``st.stop()`` drops a click made while the page ran (see above): every page ends with ``ui.stop_page()``."""
    calls = {p.name: len(re.findall(r"\bst\.stop\(\)", p.read_text())) for p in (ROOT / "pages").glob("*.py")}
    calls["app.py"] = len(re.findall(r"\bst\.stop\(\)", (ROOT / "app.py").read_text()))
    assert {name: n for name, n in calls.items() if n} == {}


@pytest.mark.browser
def test_a_click_made_while_the_page_runs_is_kept_when_the_page_stops_early(tmp_path_factory, page):
    from helpers import open_page, page_exceptions, served_app

    with served_app(tmp_path_factory.mktemp("click_app"), CLICK_APP) as (_, url):
        open_page(page, url)
        page.get_by_text("pressed 0 times").wait_for(timeout=90_000)
        page.get_by_role("button", name="Start the long run").click()
        page.get_by_text("the page is running").wait_for(timeout=60_000)
        page.get_by_role("button", name="Rejoin").click()  # while the page's run waits
        page.get_by_text("pressed 1 times").wait_for(timeout=60_000)  # st.stop() left it at 0
        page.get_by_text("the frame's last line ran").wait_for(timeout=60_000)
        assert page_exceptions(page) == []
