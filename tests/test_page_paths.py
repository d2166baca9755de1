"""Paths page (AppTest + browser)."""
import pytest

from helpers import new_app, no_exceptions, texts, visit
from test_page_lesion import private_cache, with_pair  # noqa: F401 - the fixture is used by name


def test_paths_on_the_sidebar_model_at_initialisation():
    at = new_app("paths")
    no_exceptions(at)
    assert at.radio(key="pa_source").value == "init"  # the page shows its lesson at once, on random weights
    assert "Veit" in texts(at) and "Section 5.2" in texts(at) and "section 6" not in texts(at).lower()
    assert "random weights" in texts(at)
    n, mode, mean, k90 = (m.value for m in at.metric)
    assert (int(n), mode) == (9, "4 and 5")  # resnet20: 9 blocks, Binomial(9, 1/2) has modes 4 and 5
    assert 0 <= float(mean) <= 9 and 0 <= int(k90) <= 9
    assert ("no shorter than a typical path (4.5 blocks)" in texts(at)) == (float(mean) >= 4.5)


def test_paths_on_the_trained_pair():
    at = with_pair("paths")
    at.radio(key="pa_source").set_value("trained")
    at.slider(key="pa_samples").set_value(1).run()
    no_exceptions(at)
    assert int(at.metric[0].value) == 2 and "tiny test pair" in texts(at)


@pytest.mark.browser
def test_paths_in_browser(app_server, page):
    visit(page, app_server, "paths", "Veit")
