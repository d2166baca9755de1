"""Shattered gradients page (AppTest + browser)."""
import numpy as np
import pytest

from helpers import new_app, no_exceptions, texts, visit
from resviz.lessons import shattered
from test_page_paths import boxes, fresh_results, shown_kinds  # noqa: F401 - the fixture is used by name
from test_shattered import averaged


def test_shattered_smoke_depth_and_the_depth_curve():
    at = new_app("shattered")
    no_exceptions(at)
    assert "Balduzzi" in texts(at) and "sublinearly" in texts(at) and "stay smooth" not in texts(at)
    assert len(at.get("plotly_chart")) == 2  # the sweep, and the correlation against depth
    assert "over 5 initialisations" in at.subheader[0].value and "seeds 0–4" in texts(at, ("caption",))
    # seeds 0-4 at the page's sizes: every ResNet draw above every plain draw at 24, 50 and 100 layers
    assert shown_kinds(at) == ["success"] and "Averaged over 5 initialisations" in boxes(at)["success"][0]
    at.slider(key="sh_depth").set_value(60).run()
    no_exceptions(at)
    plain, res = (float(m.value) for m in at.metric)
    assert plain < 0.3 < res  # deep plain: noise; ResNet: still correlated
    at.slider(key="sh_depth").set_value(2).run()
    assert float(at.metric[0].value) > 0.8  # shallow plain: smooth


def test_the_metric_is_the_lag_1_correlation(monkeypatch, fresh_results):
    """Alternating gradients +1, -1, ... over 256 points: lag 1 is -255/256 (shown -1.00), lag 2 is +254/256."""
    monkeypatch.setattr(shattered, "input_gradients", lambda net, x: (-1.0) ** np.arange(len(x)))
    at = new_app("shattered")
    no_exceptions(at)
    assert [m.value for m in at.metric] == ["-1.00", "-1.00"]


@pytest.mark.parametrize("resnet,kind,words", [
    ([[0.9, 0.7, 0.6, 0.5], [1.0, 0.5, 0.4, 0.3]], "success", "as Balduzzi et al."),  # well apart at every depth
    ([[0.9, 0.2, 0.2, 0.2], [1.0, 0.2, 0.2, 0.2]], "info", "by only 0.18"),  # apart, by less than the paper's gap
    ([[0.9, 0.7, 0.05, 0.5], [1.0, 0.5, 0.8, 0.3]], "warning", "cannot tell the two nets apart"),  # inside the noise
])
def test_each_depth_verdict_appears_in_its_own_box(monkeypatch, fresh_results, resnet, kind, words):
    curve = averaged([[0.95, 0.05, 0.0, -0.05], [0.85, -0.05, 0.1, 0.05]], resnet)
    monkeypatch.setattr(shattered, "depth_curve", lambda *a, **k: curve)
    at = new_app("shattered")
    no_exceptions(at)
    assert shown_kinds(at) == [kind] and len(boxes(at)[kind]) == 1 and words in boxes(at)[kind][0]


@pytest.mark.browser
def test_shattered_in_browser(app_server, page):
    visit(page, app_server, "shattered", "Balduzzi")
