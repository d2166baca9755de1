"""The signal-flow page: AppTest smoke and interaction tests (widgets set by key), one browser test."""
import io

import pytest
from PIL import Image

from conftest import new_app, no_exceptions, open_page, page_exceptions, screenshot, wait_idle


def text(at) -> str:
    return " ".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error]
                    + [w.value for w in at.warning])


def charts(at) -> list[str]:
    return [c.proto.spec for c in at.get("plotly_chart")]


@pytest.fixture(scope="module")
def app():
    at = new_app("signal_flow", timeout=180)
    no_exceptions(at)
    return at


def test_smoke_resnet20_with_bn_at_init(app):
    assert not app.error
    t = text(app)
    assert "**resnet20** (20 layers, batch norm on) and its plain twin" in t
    assert "**ResNet**: going forward" in t and "**Plain twin**: going forward" in t
    assert "With batch norm the plain net's gradient does not vanish here" in t
    assert "both curves sit at 1 by construction" in t
    specs = charts(app)
    assert len(specs) == 5 and all('"plain twin"' in s and '"ResNet"' in s for s in specs)
    assert '"type":"log"' in specs[2].replace(" ", "")  # gradient norms on a log scale


def test_bn_off_with_pytorch_default_init_shows_vanishing(app):
    app.toggle(key="sf_bn").set_value(False)
    app.selectbox(key="sf_init").set_value("default").run()
    no_exceptions(app)
    t = text(app)
    assert "batch norm off" in t and "Without BN the response is the 3x3 conv's own output" in t
    assert "the plain net's gradient vanishes, while the ResNet's shortcuts carry it through" in t
    app.toggle(key="sf_bn").set_value(True)
    app.selectbox(key="sf_init").set_value("kaiming").run()


def test_depth_and_training_steps(app):
    app.select_slider(key="sf_depth").set_value(8)
    app.slider(key="sf_steps").set_value(3).run()
    no_exceptions(app)
    t = text(app)
    assert "**resnet8** (8 layers" in t and "After 3 SGD steps (lr 0.01)" in t
    assert len(app.tabs) == 5 and len(charts(app)) == 6  # + the training-loss chart
    app.slider(key="sf_steps").set_value(0).run()


def test_uploaded_image_and_a_broken_file(app):
    app.radio(key="sf_input").set_value("Upload an image").run()
    assert "No image yet" in " ".join(i.value for i in app.info)
    buf = io.BytesIO()
    Image.new("RGB", (60, 40), (30, 90, 200)).save(buf, format="PNG")
    app.file_uploader(key="sf_upload").set_value(("blue.png", buf.getvalue(), "image/png")).run()
    no_exceptions(app)
    assert not app.error and "your image (a batch of 1)" in text(app)
    app.file_uploader(key="sf_upload").set_value(("fake.png", b"no picture here", "image/png")).run()
    no_exceptions(app)
    assert "That image cannot be used" in app.error[0].value and "not an image we can read" in app.error[0].value
    app.radio(key="sf_input").set_value("Built-in batch").run()
    assert not app.error


def test_sidebar_model_is_used_when_asked():
    at = new_app("signal_flow", timeout=180, sidebar={"sel_family": "Custom", "sel_layers": "1, 1",
                                                      "sel_size": 16, "sel_plain": True})
    at.radio(key="sf_source").set_value("The sidebar model").run()
    no_exceptions(at)
    assert "**custom-6** (6 layers, batch norm on) and its plain twin" in text(at)  # residual version of the pick


def test_results_are_cached_per_configuration_and_shared(monkeypatch):
    from resviz.lessons import signal_flow as stats

    calls = []
    real = stats.compare_signal_flow
    monkeypatch.setattr(stats, "compare_signal_flow", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    at = new_app("signal_flow", timeout=180)
    calls.clear()  # the default configuration may or may not be cached already
    at.select_slider(key="sf_depth").set_value(14)
    at.slider(key="sf_batch").set_value(3).run()  # a configuration no other test uses
    at.run()
    assert [c.depth for c in calls] == [14]  # the rerun was served from the cache
    other = new_app("signal_flow", timeout=180)  # another student's session
    other.select_slider(key="sf_depth").set_value(14)
    other.slider(key="sf_batch").set_value(3).run()
    assert len(calls) == 1 and "**resnet14** (14 layers" in text(other)
    other.toggle(key="sf_bn").set_value(False).run()  # a new configuration is measured
    assert len(calls) == 2 and not calls[1].norm


@pytest.mark.browser
def test_browser_page_renders_charts(app_server, page):
    open_page(page, app_server, "signal_flow")
    page.get_by_text("What the charts show").first.wait_for(timeout=90_000)
    wait_idle(page)
    assert page_exceptions(page) == []
    assert page.get_by_text("going backward, the gradient norm").count() >= 1
    assert page.locator(".js-plotly-plot").count() >= 1
    page.set_viewport_size({"width": 1400, "height": 2400})
    wait_idle(page)
    screenshot(page, "signal_flow")
