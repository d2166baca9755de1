"""Shattered gradients page (AppTest + browser)."""
import pytest

from helpers import new_app, no_exceptions, texts, visit


def test_shattered_smoke_depth_and_the_depth_curve():
    at = new_app("shattered")
    no_exceptions(at)
    assert "Balduzzi" in texts(at) and "sublinearly" in texts(at) and "stay smooth" not in texts(at)
    assert len(at.get("plotly_chart")) == 2  # the sweep, and the correlation against depth
    at.slider(key="sh_depth").set_value(60).run()
    no_exceptions(at)
    plain, res = (float(m.value) for m in at.metric)
    assert plain < 0.3 < res  # deep plain: noise; ResNet: still correlated
    at.slider(key="sh_depth").set_value(2).run()
    assert float(at.metric[0].value) > 0.8  # shallow plain: smooth


@pytest.mark.browser
def test_shattered_in_browser(app_server, page):
    visit(page, app_server, "shattered", "Balduzzi")
