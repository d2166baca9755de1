"""Issue 21 §4: at 1280x720 with Projector on, each page's main figure and its verdict start on the first screen
(Home, Architecture, Shortcut lab, Signal flow, Feature maps); the other sections of the long pages start with their
figure and its verdict. One server, one browser, one page load a case; the first screens are saved
(SCREENSHOTS/first_screen_<page>.png) to be looked at."""
import pytest

from layout import CHART, IMAGE, PROJECTOR_SCREEN, assert_on_first_screen, first_screen

pytestmark = pytest.mark.browser
ALERT = "[data-testid='stAlert']"  # an st.success / info / warning / error box
TABLE = "[data-testid='stTable']"


def test_home_the_block_picture_and_the_why(app_server, page):
    tops = first_screen(page, app_server, "", IMAGE, "text=Why.")
    assert_on_first_screen(tops)
    box = page.locator(IMAGE).first.bounding_box()  # the picture whole across: not cut at the window's edge
    assert box["x"] + box["width"] <= PROJECTOR_SCREEN["width"], box


@pytest.mark.parametrize("link", ["", "?sel_family=ImageNet&sel_imagenet=resnet50"], ids=["resnet20", "resnet50"])
def test_architecture_where_x_cannot_be_added_and_the_graph(app_server, page, link):
    """ResNet-50 says the most (four projections) and has the most stages to choose from."""
    tops = first_screen(page, app_server, f"architecture{link}", "text=Where x cannot be added as it is", CHART,
                        name=f"architecture_{link and 'resnet50' or 'resnet20'}")
    assert_on_first_screen(tops)
    last = page.get_by_role("radio", name="all").or_(page.get_by_text("all", exact=True)).first.bounding_box()
    assert last and last["x"] + last["width"] <= PROJECTOR_SCREEN["width"] - 100, last  # every stage's button shown


def test_shortcut_lab_the_naive_addition_and_the_fixes(app_server, page):
    """The verdict on F(x) + x and the table of fixes first; sections 3 and 4 each start with their chart."""
    assert_on_first_screen(first_screen(page, app_server, "shortcut_lab", f"{ALERT} >> text=These differ", TABLE))
    for heading in ("3 · What a 1x1 convolution is", "4 · The bottleneck"):  # scrolled to: the chart comes first
        section = page.get_by_role("heading", name=heading)
        section.scroll_into_view_if_needed()
        top = section.bounding_box()["y"]
        charts = [b["y"] - top for b in (c.bounding_box() for c in page.locator(CHART).all()) if b and b["y"] > top]
        assert charts and min(charts) < PROJECTOR_SCREEN["height"] / 2, (heading, top, charts)


def test_signal_flow_what_the_charts_show_and_the_charts(app_server, page):
    assert_on_first_screen(first_screen(page, app_server, "signal_flow",
                                        f"{ALERT} >> text=from the last conv back to the first", CHART))


def test_feature_maps_the_verdict_on_the_weights_and_the_block_views(app_server, page):
    """The shipped ResNet-20's verdict (trained, above guessing) over F(x), x and their sum."""
    assert_on_first_screen(first_screen(page, app_server, "feature_maps",
                                        f"{ALERT} >> text=These weights learned something", CHART))


def test_feature_maps_random_weights_are_said_above_the_views(app_server, page):
    tops = first_screen(page, app_server, "feature_maps?fm_source=Random+%28untrained%29",
                        f"{ALERT} >> text=These weights are random", CHART, name="feature_maps_random")
    assert_on_first_screen(tops)
    assert tops[f"{ALERT} >> text=These weights are random"] < tops[CHART]  # where the eye is: above the maps
