"""Errors become messages: a GPU out-of-memory (mocked), a config error, anything else; never a traceback."""
from unittest import mock

import torch
from streamlit.testing.v1 import AppTest


def _page(kind):
    import streamlit as st  # noqa: F401  (AppTest.from_function runs this body as a script)
    import torch

    from resviz import models, ui

    with ui.friendly_errors("Computing the thing"):
        if kind == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if kind == "config":
            raise models.ConfigError("Every stage needs at least one block.")
        raise RuntimeError("boom\nsecret internals")
    st.write("the page goes on")


def run(kind):
    return AppTest.from_function(_page, args=(kind,), default_timeout=30).run()


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
    assert not at.exception and "Every stage needs at least one block." in at.error[0].value


def test_unexpected_error_shows_one_line_and_logs_the_rest(caplog):
    at = run("other")
    assert not at.exception
    assert "RuntimeError: boom" in at.error[0].value and "secret internals" not in at.error[0].value


def test_oom_without_cuda_does_not_touch_cuda():
    with mock.patch("torch.cuda.empty_cache") as empty:
        at = run("oom")
    assert "ran out of memory" in at.error[0].value
    assert empty.call_count == (1 if torch.cuda.is_available() else 0)
