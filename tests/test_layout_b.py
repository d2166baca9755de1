"""Issue 21 §4: at 1280x720 with Projector on, the main figure and the verdict of Lesion study, Paths, Shattered
gradients and Loss landscape start on the first screen, and none of the page's charts has text over text or cut at
its edge (Chromium's own layout of plotly's text). One server, one browser, one page load a case; the first screens
are saved (SCREENSHOTS/first_screen_<page>.png) to be looked at."""
import pytest

from helpers import CHART_TEXTS_JS, text_collisions
from layout import CHART, assert_on_first_screen, first_screen

pytestmark = pytest.mark.browser
ALERT = "[data-testid='stAlert']"  # an st.success / info / warning / error box

# page, its main figure (the chart's key), its verdict box; the pair pages study the shipped pair (their default)
CASES = [
    ("lesion", "le_chart", ALERT),  # the only box outside the folded settings
    ("paths", "pa_chart", ALERT),
    ("shattered", "sh_depth_chart", ALERT),  # the curve over 5 initialisations, and what it shows
    ("landscape", "ls_contour", f"{ALERT}:has-text('random slices')"),  # not the finer grid's progress box
]


def _chart(key: str) -> str:
    """The chart drawn with ``key=key`` (Streamlit marks its element with the class st-key-<key>)."""
    return f".st-key-{key} {CHART}"


@pytest.mark.parametrize("path, chart, verdict", CASES, ids=[c[0] for c in CASES])
def test_main_figure_and_verdict_on_the_first_screen_and_no_text_over_text(app_server, page, path, chart, verdict):
    assert_on_first_screen(first_screen(page, app_server, path, _chart(chart), verdict, timeout_ms=240_000))
    found = {i: text_collisions(c.evaluate(CHART_TEXTS_JS)) for i, c in enumerate(page.locator(CHART).all())}
    assert found and not any(found.values()), found


def test_a_link_to_a_pair_to_train_opens_the_settings(app_server, page):
    """The settings are folded, but not when a link picks a pair to train here: its button is in there."""
    from urllib.parse import quote

    from resviz import ui

    link = f"lesion?le_pair_choice={quote(ui._pair_choice_words(ui.TRAIN_HERE))}"  # as the bound widget writes it
    assert_on_first_screen(first_screen(page, app_server, link, ".st-key-le_pair_model", name="lesion_to_train"))
