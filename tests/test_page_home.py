"""The frame and the home page: the residual block as a picture, the paper's hypothesis stated as one, the projector
switch; in Chromium, nothing fetched from another host, and a shared page link works on a fresh server."""
import pytest

from helpers import checked_app, texts, visit
from resviz.lessons import HOME_HEADING, LESSONS
from resviz.tools import browser as chromium
from resviz.tools.server import start_server, stop_server

NAVIGATION = ["Home", *(lesson.title for lesson in LESSONS)]  # the app's own navigation, in order


def nav_titles(pg) -> list[str]:
    """The sidebar navigation's labels without their icon names (Material icons render as text ligatures)."""
    return [link.split("\n")[-1].strip() for link in chromium.nav_links(pg)]


def test_home_shows_the_block_as_a_picture_and_the_hypothesis_as_a_hypothesis():
    at = checked_app()
    block = [img for image in at.get("image") for img in image.proto.imgs if img.caption.startswith("A residual block")]
    assert len(block) == 1 and block[0].url.startswith("data:image/svg+xml")  # inline: no request for it
    caption = block[0].caption  # He et al. 2016: Fig. 5 (left) is the 3x3 basic block, §3.4 puts BN after each conv
    assert "Fig. 5 (left)" in caption and "§3.4" in caption and "He et al. (2016)" in caption
    shown = texts(at)
    assert "H(x) = F(x) + x" in shown and "**hypothesis** (§1, §3.1)" in shown
    assert "degradation problem, §1 and Fig. 1" in shown
    assert "which is hard" not in shown  # the old wording stated the hypothesis as a fact


def test_projector_switch_is_in_the_sidebar_for_every_page():
    at = checked_app()
    assert at.sidebar.toggle(key="projector").value is False  # off until the teacher turns it on


@pytest.mark.browser
def test_a_page_load_asks_no_other_host_for_anything(app_server, page):
    requests = chromium.watch_requests(page)
    visit(page, app_server, "", HOME_HEADING)
    chromium.open_page(page, app_server, "architecture")
    assert any(u.startswith(app_server) for u in requests)  # the watch sees the app's own requests
    assert chromium.foreign(requests, app_server) == []
    assert nav_titles(page) == NAVIGATION


@pytest.mark.browser
def test_the_title_starts_near_the_top_of_the_first_screen(app_server, page):
    chromium.open_page(page, app_server)
    assert page.locator("h1").first.bounding_box()["y"] < 100  # px; Streamlit's own padding puts it at ~140


@pytest.mark.browser
def test_a_shared_page_link_shows_the_apps_navigation_on_a_fresh_server(browser, tmp_path):
    proc, url = start_server(log_path=tmp_path / "server.log")
    ctx = browser.new_context(viewport=chromium.VIEWPORT)
    try:
        pg = chromium.open_page(ctx.new_page(), url, "training")  # the first request this server ever gets
        assert nav_titles(pg) == NAVIGATION
        assert pg.get_by_role("heading", name="Training race").count() > 0
        assert pg.get_by_text("Page not found").count() == 0  # the switch out of legacy mode keeps the URL's page
    finally:
        ctx.close()
        stop_server(proc)
