"""The first screen a class sees: a page opened at 1280x720 with Projector on, where its main figure and verdict sit.

    from layout import PROJECTOR_SCREEN, first_screen
    tops = first_screen(page, app_server, "shortcut_lab", CHART, "text=PyTorch refuses")
    assert all(y < PROJECTOR_SCREEN["height"] for y in tops.values()), tops
"""
from __future__ import annotations

from pathlib import Path

from helpers import SCREENSHOTS, open_page, page_exceptions, wait_idle
from resviz.lessons import page_texts
from resviz.tools import browser

PROJECTOR_SCREEN = {"width": 1280, "height": 720}  # a classroom projector (issue 21 §4)
CHART = "[data-testid='stPlotlyChart']"  # a Plotly figure; IMAGE an st.image
IMAGE = "[data-testid='stImage']"


def projector_url(path: str) -> str:
    """``path`` (a page, maybe with its own query string) with Projector on, as a teacher's link has it."""
    return f"{path}{'&' if '?' in path else '?'}projector=true"


def first_screen(pg, base_url: str, path: str, *targets: str, name: str | None = None,
                 timeout_ms: int = 120_000) -> dict[str, float]:
    """Open ``path`` at 1280x720 with Projector on, wait until every target is drawn and the page has finished
    computing, check it shows its heading (``page_texts``) and no exception box, save the first screen as
    SCREENSHOTS/first_screen_<name>.png and return each target's top y in px from the top of the window (Streamlit
    scrolls inside its own container, so this is the unscrolled page).

    A target is a Playwright selector: CSS (``CHART``, ``IMAGE``, ``"[data-testid='stAlert']"``) or ``"text=..."``;
    its first visible match counts."""
    pg.set_viewport_size(PROJECTOR_SCREEN)
    open_page(pg, base_url, projector_url(path), timeout_ms)
    found = {t: pg.locator(t).locator("visible=true").first for t in targets}
    for loc in found.values():  # pages draw their heavy parts after the first screen: wait for each
        loc.wait_for(state="visible", timeout=timeout_ms)
    pg.get_by_text(page_texts()[path.split("?")[0]]).first.wait_for(timeout=timeout_ms)  # its heading, as visit()
    wait_idle(pg, timeout_ms)  # anything drawn after the targets (above them too) has settled
    assert page_exceptions(pg) == []
    tops = {t: loc.bounding_box()["y"] for t, loc in found.items()}
    browser.screenshot(pg, Path(SCREENSHOTS) / f"first_screen_{name or path.split('?')[0] or 'home'}.png")
    return tops


def assert_on_first_screen(tops: dict[str, float]) -> None:
    """Every target starts above the bottom of the projector's first screen."""
    below = {t: y for t, y in tops.items() if y >= PROJECTOR_SCREEN["height"]}
    assert not below, f"below the first screen ({PROJECTOR_SCREEN['height']} px): {below}; all: {tops}"
