"""Issue 21 §4: at 1280x720 with Projector on, each page's main figure and its verdict start on the first screen
(Home, Architecture, Shortcut lab, Signal flow, Feature maps). One server, one browser, one page load a case."""
import pytest

from layout import CHART, IMAGE, assert_on_first_screen, first_screen

pytestmark = pytest.mark.browser


def test_home_the_block_picture_and_the_why(app_server, page):
    assert_on_first_screen(first_screen(page, app_server, "", IMAGE, "text=Why."))
