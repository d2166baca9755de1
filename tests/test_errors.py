"""Errors become messages: a GPU out-of-memory (mocked), a config error, anything else; never a traceback."""
import re
from unittest import mock

import pytest
import torch
from streamlit.testing.v1 import AppTest

from resviz.inputs import text


def _page(kind, named=""):
    import streamlit as st  # noqa: F401  (AppTest.from_function runs this body as a script)
    import torch

    from resviz import models, ui

    with ui.friendly_errors("Computing the thing"):
        if kind == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if kind == "config":
            raise models.ConfigError("Every stage needs at least one block.")
        if kind == "named":  # a message carrying what a student named (a zip entry, a state-dict key)
            raise models.ConfigError(named)
        if kind == "named_other":
            raise KeyError(named)
        raise RuntimeError("boom\nsecret internals")
    st.write("the page goes on")


NAMED = "No key 'conv1.weight<img src=http://evil.example/x.png>[here](http://evil.example) $\\Huge x$ :red[y]'"


def bare_markup(shown: str) -> list[str]:
    """The characters of ``shown`` that markdown, HTML, LaTeX or a Streamlit directive would read (not escaped)."""
    return re.findall(r"(?<!\\)[<>\[\]()$`*_:]", shown.replace("\\\\", ""))


def run(kind):
    return AppTest.from_function(_page, args=(kind, NAMED), default_timeout=30).run()


def test_out_of_memory_is_caught_cache_emptied_and_smaller_batch_suggested():
    with mock.patch("torch.cuda.is_available", return_value=True), mock.patch("torch.cuda.empty_cache") as empty:
        at = run("oom")
    assert not at.exception
    assert "ran out of memory" in at.error[0].value and "smaller batch" in at.error[0].value
    assert "CPU" in at.error[0].value
    empty.assert_called_once()
    assert at.markdown[0].value == "the page goes on"


def test_config_error_shows_its_plain_words():
    at = run("config")
    assert not at.exception and at.error[0].value == "Computing the thing: " + text.md("Every stage needs at least one block.")


def test_unexpected_error_shows_one_line_and_logs_the_rest(caplog):
    at = run("other")
    assert not at.exception
    assert "RuntimeError: boom" in at.error[0].value and "secret internals" not in at.error[0].value


def test_oom_without_cuda_does_not_touch_cuda():
    with mock.patch("torch.cuda.empty_cache") as empty:
        at = run("oom")
    assert "ran out of memory" in at.error[0].value
    assert empty.call_count == (1 if torch.cuda.is_available() else 0)


def test_a_message_carrying_a_students_names_is_plain_text():
    at = run("named")
    assert not at.exception
    assert at.error[0].value == f"Computing the thing: {text.md(NAMED, limit=400)}"
    assert not bare_markup(at.error[0].value.split(": ", 1)[1])  # every character markdown would read is escaped


def test_an_unexpected_error_carrying_a_students_names_is_plain_text_too():
    at = run("named_other")
    assert not at.exception
    shown = at.error[0].value
    assert shown.startswith("Computing the thing failed: KeyError: ") and "evil" in shown
    assert not bare_markup(shown.split("KeyError: ", 1)[1])


def test_a_very_long_message_is_cut():
    def page():
        from resviz import models, ui

        with ui.friendly_errors("Reading the zip"):
            raise models.ConfigError("Bad entry name: " + "a" * 20_000)

    at = AppTest.from_function(page, default_timeout=30).run()
    assert len(at.error[0].value) < 500 and at.error[0].value.endswith("…")


# --- in a real browser: the message's names are text, never markup ---
MESSAGE_APP = '''
import streamlit as st

from resviz import models, ui

st.sidebar.write("sidebar")
with ui.friendly_errors("Reading the zip"):
    raise models.ConfigError({message!r})
'''
EVIL_NAMES = ('<a href="http://evil.example/">cat</a>', "![x](http://evil.example/i.png)", r"$\Huge X$",
              ":red[red]")
LINKS = """() => Array.from(document.querySelectorAll('*')).flatMap(e => Array.from(e.attributes)
    .filter(a => /href|src|action|style/i.test(a.name)).map(a => e.tagName + ' ' + a.name + '=' + a.value))"""


@pytest.fixture(scope="module")
def message_server(tmp_path_factory):
    from helpers import served_app

    source = MESSAGE_APP.format(message="Bad entry names: " + " ".join(EVIL_NAMES))
    with served_app(tmp_path_factory.mktemp("message_app"), source) as (_, url):
        yield url


@pytest.mark.browser
def test_a_message_with_hostile_names_shows_them_as_typed_in_the_browser(message_server, page):
    from helpers import open_page, page_exceptions

    open_page(page, message_server)
    alert = page.locator('[data-testid="stAlertContentError"]').first
    alert.wait_for(timeout=90_000)
    assert page_exceptions(page) == []
    assert [a for a in page.evaluate(LINKS) if "evil" in a] == []  # no link or image to the student's host
    assert page.locator(".katex, mjx-container").count() == 0  # no formula made from "$\Huge X$"
    shown = alert.inner_text().replace("\u2060", "")  # word joiners are invisible
    for name in EVIL_NAMES:
        assert name in shown, (name, shown)
