"""Nothing a student names is rendered as markup, in a real browser: a real ``streamlit run`` of the app whose session
holds a Training race pair with hostile class names and label (what a zip's folder names and file name bring), the
Feature maps page opened in headless Chromium, then a weights file with a hostile name and a hostile tensor name
uploaded, and the DOM read each time: no link or image to the student's host, no KaTeX made from a name, and the
student's characters visible as typed."""
from __future__ import annotations

import pytest

from helpers import ROOT, open_page, page_exceptions, saved, screenshot, wait_idle
from resviz import models
from resviz.inputs import text
from resviz.plots.feature_maps import LABEL_CHARS
from resviz.tools.server import start_server, stop_server

EVIL = "evil.example"
NAMES = ('<a href="http://evil.example/">cat</a>', "![x](http://evil.example/i.png)", r"$\Huge X$", "<b>bold</b>")

# The real app (runpy), in a session that starts with the race's pair in it and the trained weights chosen; page
# paths are relative to this script, so the folder links the repository's pages, assets, package and config.
HOSTILE_APP = '''
import runpy
from dataclasses import replace

import streamlit as st

from resviz import models
from resviz.lessons.feature_maps import WeightsSource
from resviz.pair import TrainedPair

NAMES = {names!r}
if "trained" not in st.session_state:
    cfg = replace(models.get_config("resnet20"), num_classes=len(NAMES))
    resnet, plain = models.build_model(cfg, seed=3), models.build_model(models.plain_config(cfg), seed=4)
    st.session_state["trained"] = TrainedPair(cfg, resnet.state_dict(), plain.state_dict(),
                                              "resnet20 trained 5 steps on " + " ".join(NAMES), class_names=NAMES,
                                              data_name=" ".join(NAMES), steps=5)
    st.session_state["fm_source"] = WeightsSource.TRAINED
    st.session_state["fm_target"] = 0  # Grad-CAM explains the class named as a link
runpy.run_path({app!r}, run_name="__main__")
'''


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile_app")
    for name in ("pages", "assets", "resviz", ".streamlit"):
        (folder / name).symlink_to(ROOT / name)
    (folder / "app.py").write_text(HOSTILE_APP.format(names=NAMES, app=str(ROOT / "app.py")))
    proc, url = start_server(script="app.py", cwd=folder, log_path=folder / "log.txt", env={"RESVIZ_WARM_UP": "0"})
    try:
        yield url
    finally:
        stop_server(proc)


LINKS = """() => Array.from(document.querySelectorAll('*')).flatMap(e => Array.from(e.attributes)
    .filter(a => /href|src|action|style/i.test(a.name)).map(a => e.tagName + ' ' + a.name + '=' + a.value))"""
SVG_TEXT = "() => Array.from(document.querySelectorAll('svg text')).map(t => t.textContent)"
KATEX = "() => Array.from(document.querySelectorAll('.katex, mjx-container, .MathJax')).map(k => k.textContent)"


@pytest.mark.browser
def test_hostile_class_names_and_labels_are_shown_as_typed_and_never_as_markup(hostile_server, page):
    page.set_viewport_size({"width": 1280, "height": 720})  # the teacher's projector
    open_page(page, hostile_server, "feature_maps")
    page.get_by_text("Inside block layer1.0").first.wait_for(timeout=90_000)
    page.locator('[data-testid="stPlotlyChart"] svg text', has_text="(0)").first.wait_for(timeout=90_000)  # top-5
    wait_idle(page)
    screenshot(page, "feature_maps_hostile_names")
    assert page_exceptions(page) == []
    assert [a for a in page.evaluate(LINKS) if EVIL in a] == []  # no link, image or style fetching their host
    assert page.evaluate(KATEX) == []  # no formula made from "$\Huge X$" (the page has no formula of its own)
    body = page.inner_text("body").replace(text.WORD_JOINER, "")  # invisible: what GFM would link is split by it
    charts = page.evaluate(SVG_TEXT)
    for name in NAMES:  # the caption and the note say the pair's label: every character as the student typed it
        assert name in body, (name, body[:3000])
    for i, name in enumerate(NAMES):  # the top-5 bars name every class (four here), as typed, with its index
        assert f"{text.shorten(name, LABEL_CHARS)} ({i})" in charts, charts
    title = f"Grad-CAM at layer3.2: '{NAMES[0]}'".replace(" ", "")  # its lines are drawn apart: spaces aside
    assert any(title in t.replace(" ", "") for t in charts), [t for t in charts if "Grad" in t]  # the class as typed


FILE = r"![x](http:evil.example) $\Huge Y$ <img src=http:evil.example>.pt"  # a file name holds no "/"
KEY = '<a href="http://evil.example/">k</a> ![k](http://evil.example/k.png)'  # a tensor name holds anything


def assert_inert(page) -> str:
    """No element from the student's text; returns the page's text as read (word joiners are invisible)."""
    assert page_exceptions(page) == []
    assert [a for a in page.evaluate(LINKS) if EVIL in a] == []
    assert page.evaluate(KATEX) == []
    return page.inner_text("body").replace(text.WORD_JOINER, "")


@pytest.mark.browser
def test_a_hostile_file_name_and_tensor_name_are_shown_as_typed(hostile_server, page):
    page.set_viewport_size({"width": 1280, "height": 720})
    open_page(page, hostile_server, "feature_maps")
    page.get_by_text("Upload a state dict").first.click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').nth(1).wait_for(state="attached", timeout=90_000)
    sd = models.build_model("resnet20", seed=7).state_dict()
    good = {"name": FILE, "mimeType": "application/octet-stream", "buffer": saved(sd)}
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').nth(1).set_input_files(good)
    page.get_by_text("with uploaded").first.wait_for(timeout=90_000)
    wait_idle(page)
    assert FILE in assert_inert(page)  # the caption names the file as typed
    bad = {**good, "name": "extra.pt", "buffer": saved({**sd, KEY: sd["fc.bias"]})}
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').nth(1).set_input_files(bad)
    page.get_by_text("does not know").first.wait_for(timeout=90_000)
    wait_idle(page)
    screenshot(page, "feature_maps_hostile_key")
    assert KEY in assert_inert(page)  # the refusal names the tensor as typed
