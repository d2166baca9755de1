"""Screenshots of every page: start the app, open each page in headless Chromium at 1400x900, save PNGs.

    python -m resviz.tools.screenshots [--out assets/screenshots] [--pages architecture training ...] [--full]
    python -m resviz.tools.screenshots --projector --pages lesion "paths?pa_source=a%20trained%20ResNet" \
        landscape feature_maps   # the README's: the pair pages on the shipped pair

``<page>.png`` is the first screen (what a projector shows before anyone scrolls); with ``--full`` also
``<page>_full.png``, the whole page. The home page is saved as ``home.png``. Pages come from resviz.lessons.
``--projector``: at 1280x720 with the sidebar's Projector on, as a class sees the page. A page whose figure is
computed (the pair pages, Feature maps) is shot once its first figure is drawn: after ``python -m resviz.prepare``
into the server's disk cache (``RESVIZ_CACHE``) that is at once, as on a student's first visit.
"""
import argparse
import sys
from pathlib import Path

from resviz.lessons import page_texts
from resviz.tools import browser
from resviz.tools.server import ROOT, start_server, stop_server


PROJECTOR = {"width": 1280, "height": 720}  # a classroom projector (tests/layout.py checks pages at this size)
FIGURE = "[data-testid='stPlotlyChart'], [data-testid='stImage']"
PROGRESS = "[data-testid='stProgress']"  # a result still being computed (ui.background_result's bar)
COMPUTED = ("signal_flow", "lesion", "paths", "shattered", "landscape", "feature_maps")  # figures drawn after a run
FIGURE_WAIT_MS = 900_000  # a page that computes on first open (nothing prepared) on a busy 2-core CPU


def before_shot(pg, path: str) -> None:
    """A little interaction so the shot shows the page at work."""
    if path in COMPUTED:  # the page's figure, once computed (its progress bar first)
        pg.locator(FIGURE).locator("visible=true").first.wait_for(timeout=FIGURE_WAIT_MS)
        pg.locator(PROGRESS).first.wait_for(state="detached", timeout=FIGURE_WAIT_MS)  # its verdict's run too
        browser.wait_idle(pg, FIGURE_WAIT_MS)
    if path == "training":
        steps = pg.get_by_label("Steps")
        steps.fill("60")
        steps.press("Enter")
        browser.wait_idle(pg)
        pg.get_by_role("button", name="Start").click()
        pg.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=240_000)  # the race draws its curves
        browser.wait_idle(pg, 240_000)
    if path == "architecture":
        pg.get_by_text("layer2", exact=True).first.click()
        browser.wait_idle(pg)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "assets" / "screenshots"))
    ap.add_argument("--pages", nargs="*", default=list(page_texts()), help="URL paths ('' is home); default: all")
    ap.add_argument("--full", action="store_true", help="also save the whole page as <page>_full.png")
    ap.add_argument("--url", help="use this running server instead of starting one")
    ap.add_argument("--projector", action="store_true", help="1280x720 with the sidebar's Projector on")
    args = ap.parse_args(argv)
    reason = browser.missing()
    if reason:
        ap.error(reason)
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    proc, url = (None, args.url) if args.url else start_server()
    try:
        with sync_playwright() as p:
            chromium = browser.launch(p)
            pg = chromium.new_page(viewport=PROJECTOR if args.projector else browser.VIEWPORT)
            for path in args.pages:  # a page may carry its link's settings: "paths?pa_source=a%20trained%20ResNet"
                name = path.split("?")[0] or "home"
                browser.open_page(pg, url, f"{path}{'&' if '?' in path else '?'}projector=true" if args.projector
                                  else path)
                try:
                    before_shot(pg, path.split("?")[0])
                except Exception as e:  # noqa: BLE001 - still take the shot, and say why it is plain
                    print(f"{name}: could not interact ({type(e).__name__}: {e})")
                errors = browser.page_exceptions(pg)
                browser.screenshot(pg, out / f"{name}.png")
                if args.full:
                    browser.screenshot(pg, out / f"{name}_full.png", full=True)
                print(f"{name}: {'OK' if not errors else errors}")
            chromium.close()
    finally:
        if proc:
            stop_server(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
