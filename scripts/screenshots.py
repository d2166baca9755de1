"""Refresh the README's screenshots: start the app, open each page in headless Chromium, save PNGs.

    python scripts/screenshots.py [--out assets/screenshots] [--pages architecture training ...]
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import CHROMIUM, CHROMIUM_FLAGS, page_exceptions, wait_idle  # noqa: E402
from resviz.bench._server import start_server, stop_server  # noqa: E402
from resviz.lessons import page_texts  # noqa: E402

PAGES = list(page_texts())


def before_shot(pg, path: str) -> None:
    """A little interaction so the shot shows the page at work."""
    if path == "training":
        steps = pg.get_by_label("Steps")
        steps.fill("60")
        steps.press("Enter")
        wait_idle(pg)
        pg.get_by_role("button", name="Start").click()
        pg.wait_for_timeout(1000)
        wait_idle(pg, 240_000)
    if path == "architecture":
        pg.get_by_text("layer2", exact=True).first.click()
        wait_idle(pg)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "assets" / "screenshots"))
    ap.add_argument("--pages", nargs="*", default=PAGES)
    ap.add_argument("--height", type=int, default=1100)
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    proc, url = start_server()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            pg = browser.new_page(viewport={"width": 1400, "height": args.height})
            pg.goto(url)
            wait_idle(pg)
            for path in args.pages:
                pg.goto(f"{url}/{path}")
                wait_idle(pg)
                try:
                    before_shot(pg, path)
                except Exception as e:  # noqa: BLE001 - still take the shot, and say why it is plain
                    print(f"{path}: could not interact ({type(e).__name__})")
                pg.wait_for_timeout(1500)
                errors = page_exceptions(pg)
                pg.screenshot(path=str(out / f"{path or 'home'}.png"))
                print(f"{path or 'home'}: {'OK' if not errors else errors}")
            browser.close()
    finally:
        stop_server(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
