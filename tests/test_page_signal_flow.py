"""The signal-flow page: AppTest smoke and interaction tests (widgets set by key), one browser test that looks at the
first screen at 1400x900."""
import re

import pytest

from helpers import (SCREENSHOTS, checked_app, figures, new_app, no_exceptions, open_page, page_exceptions, png,
                     screenshot, texts, wait_idle)
from resviz.lessons import signal_flow as sf
from resviz.tools import browser


@pytest.fixture(scope="module")
def app():
    return checked_app("signal_flow", timeout=180)


def test_smoke_resnet20_with_bn_at_init_says_random_weights_and_cites_what_it_measured(app):
    assert not app.error
    t = texts(app)
    assert "**resnet20** (20 layers, batch norm on) and its plain twin: **random weights** (seed 0" in t
    assert "**ResNet**: forward, the RMS of the conv outputs" in t and "**Plain twin**: forward" in t
    assert "With batch norm, at initialisation, from the last conv back to the first" in t
    assert "in line with the paper" not in t and "both curves sit at 1 by construction" in t
    assert "RMS, mean and std over the batch and every channel and position" in t  # the table says which norm
    specs = figures(app)
    assert len(specs) == 4 and all({"ResNet", "plain twin"} <= {d["name"] for d in s["data"]} for s in specs[:3])
    forward, backward = specs[:2]
    assert backward["layout"]["yaxis"]["type"] == "log"
    assert "RMS of ∂loss/∂output" in backward["layout"]["yaxis"]["title"]["text"]
    assert "over batch × channels × positions" in forward["data"][0]["hovertemplate"]
    assert [d["line"]["color"] for d in forward["data"]] == ["#1f77b4", "#d62728"]


def test_the_page_prints_the_numbers_it_figures(app):
    """The first and last points of the backward chart are the numbers the ResNet's line quotes."""
    backward = figures(app)[1]
    resnet = next(d for d in backward["data"] if d["name"] == "ResNet")
    line = next(m.value for m in app.markdown if "**ResNet**" in m.value)
    quoted = re.search(r"gradient goes from (\S+) at the last conv to (\S+) at the first conv", line).groups()
    assert quoted == (f"{resnet['y'][-1]:.3g}", f"{resnet['y'][0]:.3g}")


def test_bn_off_with_pytorch_default_init_shows_vanishing(app):
    app.toggle(key="sf_bn").set_value(False)
    app.selectbox(key="sf_init").set_value(sf.Init.DEFAULT).run()
    no_exceptions(app)
    t = texts(app)
    assert "batch norm off" in t and "Without BN the response is the 3x3 conv's own output" in t
    assert "the plain net's gradient vanishes" in t and "The shortcuts carry the gradient back" in t
    app.toggle(key="sf_bn").set_value(True)
    app.selectbox(key="sf_init").set_value(sf.Init.KAIMING).run()


def test_zero_last_bn_without_bn_says_it_zeroes_the_last_conv(app):
    app.toggle(key="sf_bn").set_value(False)
    app.selectbox(key="sf_init").set_value(sf.Init.ZERO_LAST).run()
    no_exceptions(app)
    t = texts(app)
    assert "zeroes the last conv of every block instead" in t and "dead" not in t
    app.toggle(key="sf_bn").set_value(True)
    app.selectbox(key="sf_init").set_value(sf.Init.KAIMING).run()


def test_depth_and_training_steps(app):
    app.select_slider(key="sf_depth").set_value(8)
    app.slider(key="sf_steps").set_value(3).run()
    no_exceptions(app)
    t = texts(app)
    assert "**resnet8** (8 layers" in t and "then 3 plain SGD steps (lr 0.01)" in t and "After 3 SGD steps" in t
    said = [i.value for i in app.info if "After 3 SGD steps" in i.value]  # seed 0: 2.14 against 2.23, within 10%
    assert len(said) == 1 and "within 10% of each other, so no ordering" in said[0] and not app.success
    assert len(app.tabs) == 4 and len(figures(app)) == 5  # + the training-loss chart
    names = [d["name"] for d in figures(app)[0]["data"]]
    assert names == ["ResNet at initialisation", "ResNet after 3 steps", "plain twin at initialisation",
                     "plain twin after 3 steps"]
    app.slider(key="sf_steps").set_value(0).run()


def test_memorising_a_random_label_batch_is_said_as_such_not_as_the_papers_conjecture(app):
    """50 steps at lr 0.1 on 8 random-label images: both nets memorise the batch (ResNet-8: 0.066 and 0.100)."""
    app.select_slider(key="sf_depth").set_value(8)
    app.slider(key="sf_steps").set_value(50).run()  # the rate is enabled once there are steps
    app.select_slider(key="sf_lr").set_value(0.1).run()
    no_exceptions(app)
    said = [i.value for i in app.info if "After 50 SGD steps (lr 0.1)" in i.value]
    assert len(said) == 1 and "one batch of 8 images with random labels" in said[0]
    assert "both have memorised it" in said[0] and "Fig. 6 on CIFAR-10" in said[0]
    assert not app.success and "conjecture" not in texts(app, ("info", "success", "warning"))
    app.select_slider(key="sf_lr").set_value(0.01)
    app.slider(key="sf_steps").set_value(0)
    app.select_slider(key="sf_depth").set_value(20).run()


@pytest.mark.parametrize("tone", list(sf.Tone)[:3])
def test_the_loss_verdict_is_shown_in_its_own_box(app, monkeypatch, tone):
    monkeypatch.setattr(sf, "loss_verdict", lambda result: (tone, f"The {tone.value} sentence."))
    app.run()
    no_exceptions(app)
    boxes = {kind: [e.value for e in getattr(app, kind)] for kind in ("success", "info", "warning")}
    assert [k for k, v in boxes.items() if "The " + k + " sentence." in v] == [tone.value]
    assert sum("sentence." in v for values in boxes.values() for v in values) == 1


def test_seed_changes_the_weights_and_says_so(app):
    app.number_input(key="sf_seed").set_value(3).run()
    no_exceptions(app)
    assert "random weights** (seed 3" in texts(app)
    app.number_input(key="sf_seed").set_value(0).run()


def test_uploaded_image_and_a_broken_file(app):
    app.radio(key="sf_input").set_value(sf.Input.IMAGE.value).run()
    assert "No image yet" in " ".join(i.value for i in app.info)
    app.file_uploader(key="sf_upload").set_value(("blue.png", png((60, 40), (30, 90, 200)), "image/png")).run()
    no_exceptions(app)
    assert not app.error and "your image (a batch of 1)" in texts(app)
    app.file_uploader(key="sf_upload").set_value(("fake.png", b"no picture here", "image/png")).run()
    no_exceptions(app)
    assert "Measuring the signal flow" in app.error[0].value and "not an image we can read" in app.error[0].value
    app.radio(key="sf_input").set_value(sf.Input.BATCH.value).run()
    assert not app.error


def test_sidebar_model_is_used_when_asked():
    at = new_app("signal_flow", timeout=180, sidebar={"sel_family": "Custom", "sel_layers": "1, 1",
                                                      "sel_size": 16, "sel_plain": True})
    at.toggle(key="sf_sidebar").set_value(True).run()
    no_exceptions(at)
    assert "**custom-6** (6 layers, batch norm on) and its plain twin" in texts(at)  # residual version of the pick


def test_results_are_computed_once_per_configuration_and_shared(monkeypatch):
    calls = []
    real = sf.measure
    monkeypatch.setattr(sf, "measure", lambda s, *a, **k: calls.append(s) or real(s, *a, **k))
    at = new_app("signal_flow", timeout=180)
    calls.clear()  # the default configuration may or may not be stored already
    at.select_slider(key="sf_depth").set_value(14)
    at.slider(key="sf_batch").set_value(3).run()  # a configuration no other test uses
    at.run()
    assert [c.cfg.depth for c in calls] == [14]  # the rerun was served from the shared store
    other = new_app("signal_flow", timeout=180)  # another student's session
    other.select_slider(key="sf_depth").set_value(14)
    other.slider(key="sf_batch").set_value(3).run()
    assert len(calls) == 1 and "**resnet14** (14 layers" in texts(other)
    other.toggle(key="sf_bn").set_value(False).run()  # a new configuration is measured
    assert len(calls) == 2 and not calls[1].cfg.norm


def test_on_a_server_the_controls_come_first_and_no_chart_of_other_settings_stays(monkeypatch):
    """A server measures in the background: the page draws its controls at once, shows no chart of the settings
    before, and reruns itself with the new charts when the measurement is done."""
    import threading
    import time

    from resviz import ui

    release, real = threading.Event(), sf.measure
    monkeypatch.setattr(sf, "measure", lambda *a, **k: release.wait(120) and real(*a, **k))
    monkeypatch.setattr(ui, "waits_for_results", lambda: False)  # as on a server
    try:
        at = new_app("signal_flow", timeout=180)
        release.set()  # the default settings, whether another test stored them or not
        for _ in range(600):  # the page reruns itself when the result is ready; AppTest reruns by hand
            if figures(at.run()):
                break
            time.sleep(0.1)
        assert len(figures(at)) == 4
        release.clear()
        at.select_slider(key="sf_depth").set_value(32)
        at.slider(key="sf_batch").set_value(7).run()  # settings no other test uses: measured now, in the background
        no_exceptions(at)
        assert at.slider(key="sf_batch").value == 7 and at.toggle(key="sf_bn")  # the controls are drawn
        assert not figures(at) and "What the charts show" not in texts(at)  # nothing of depth 20 is left
        release.set()
        for _ in range(600):
            if figures(at.run()):
                break
            time.sleep(0.1)
        no_exceptions(at)
        assert "**resnet32** (32 layers" in texts(at) and len(figures(at)) == 4
    finally:
        release.set()


def test_on_a_server_a_failed_background_measurement_is_said_in_plain_words(monkeypatch):
    import time

    from resviz import models, ui

    def fail(*args, **kwargs):
        raise models.ConfigError("This network is too deep for the test.")

    monkeypatch.setattr(sf, "measure", fail)
    monkeypatch.setattr(ui, "waits_for_results", lambda: False)  # as on a server
    at = new_app("signal_flow", timeout=180)
    at.number_input(key="sf_seed").set_value(9876).run()  # settings no other test stores
    for _ in range(600):  # the page reruns itself when the background measurement ends; AppTest reruns by hand
        if at.run().error:
            break
        time.sleep(0.1)
    no_exceptions(at)
    assert re.sub(r"\\(.)", r"\1", at.error[0].value) == "Measuring the signal flow: This network is too deep for the test."
    assert not figures(at)


@pytest.mark.browser
def test_browser_charts_on_the_first_screen_at_1400x900(app_server, page):
    page.set_viewport_size({"width": 1400, "height": 900})
    open_page(page, app_server, "signal_flow")
    page.get_by_text("What the charts show").first.wait_for(timeout=90_000)
    wait_idle(page)
    assert page_exceptions(page) == []
    assert page.get_by_text("backward, the RMS of the gradient").count() >= 1
    plots = page.locator(".js-plotly-plot")
    assert plots.count() >= 2
    for i in range(2):  # forward and backward charts start on the first screen
        box = plots.nth(i).bounding_box()
        assert box is not None and box["y"] < 900 - 250, box
    browser.screenshot(page, SCREENSHOTS / "signal_flow_first_screen.png")  # what a class sees first
    screenshot(page, "signal_flow")


def test_a_measurement_over_the_teachers_budget_is_refused_with_numbers(monkeypatch):
    monkeypatch.setenv("RESVIZ_BUDGET_MB", "1")  # far below what resnet20 and its twin need on a batch
    at = new_app("signal_flow")
    no_exceptions(at)
    shown = " ".join(e.value for e in at.error)
    assert "Signal flow needs about" in shown and "this server allows" in shown, shown
    assert not at.get("plotly_chart")  # nothing was measured
