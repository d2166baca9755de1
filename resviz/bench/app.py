"""The whole app: cold start to a page in Chromium, warm rerun of each page after one widget change, and
server memory per extra student session.

Pages come from resviz.lessons.page_texts(); the widget changed on each page is in PAGE_WIDGETS (keyed by lesson
name; a test checks it covers every lesson), else the first simple widget of the page is picked (the row says which).
"""
from __future__ import annotations

import time

from resviz.lessons import lesson, page_texts
from resviz.tools import browser
from resviz.tools.server import ROOT, cpu_s, rss_mb, start_server, stop_server
from resviz.tools.session import Session

PAGE_WIDGETS = {  # lesson name -> (widget key, new value): a cheap change a student makes on that page
    "architecture": ("arch_plain", True),  # show the plain twin: one more cached shape trace
    "shortcut_lab": ("sl_row", 1),  # another output pixel of the 1x1 conv
    "signal_flow": ("sf_input", "Upload an image"),  # input source; no file yet, so the cached measurement stays
    "feature_maps": ("fm_k", 4),  # channels shown; the captured maps are cached
    "training": ("tr_shallow", True),  # add the shallower plain net: nothing trains until Start
    # The pages below have no display-only widget: each change recomputes (cached per value afterwards).
    "shattered": ("sh_seed", 1),  # another initialisation: two small MLP sweeps
    "paths": ("pa_samples", 1),  # fewer random paths per length
    "lesion": ("le_n", 100),  # fewer test images (only shown once a trained pair exists; else auto-picked)
    "landscape": ("ls_seed", 1),  # other directions (only shown once a trained pair exists)
}
MEMORY_PAGES = ("", "architecture")  # each memory session renders these, like a student opening the app
RERUN_TARGET_S = 0.3
SESSION_TARGET_MB = 100


def _row(figure, value, unit, target, ok, baseline="-") -> dict:
    return {"figure": figure, "baseline": baseline, "value": float(value), "unit": unit, "target": target, "ok": ok}


def cold_start(text: str, timeout_s: float = 180) -> dict:
    """Seconds from ``streamlit run app.py`` to the home page drawn (``text`` shown, no run going) in Chromium."""
    figure = "cold start: streamlit run app.py -> home page rendered in headless Chromium"
    reason = browser.missing()
    if reason:
        return _row(f"{figure} (skipped: {reason})", float("nan"), "s", "report", None)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = browser.launch(p)
        try:
            pg = chromium.new_page()
            t0 = time.perf_counter()
            proc, url = start_server(timeout=timeout_s)
            try:
                healthy = time.perf_counter() - t0
                pg.goto(url, timeout=timeout_s * 1000)
                pg.get_by_text(text).first.wait_for(timeout=timeout_s * 1000)
                for _ in range(int(timeout_s * 10)):  # bounded: until no script run is shown as going
                    if not browser.running(pg):
                        break
                    pg.wait_for_timeout(100)
                total = time.perf_counter() - t0
            finally:
                stop_server(proc)
        finally:
            chromium.close()
    return _row(figure, total, "s", "report", None, baseline=f"server healthy after {healthy:.1f} s")


def _walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def _auto_change(widget):
    """A new value for a simple widget (toggle/checkbox, selectbox, numeric slider), or None."""
    kind = type(widget).__name__
    if kind in ("Toggle", "Checkbox"):
        return not widget.value
    if kind == "Selectbox" and len(widget.options) > 1:
        return ("index", ((widget.index or 0) + 1) % len(widget.options))
    if kind == "Slider" and isinstance(widget.value, (int, float)) and widget.min != widget.max:
        return widget.max if widget.value == widget.min else widget.min
    return None


def _pick_widget(at, page: str):
    """(widget, new value, how it was chosen) for a page, or (None, None, reason)."""
    widgets = [n for n in _walk(at.main) if getattr(n, "key", None) and hasattr(n, "set_value")]
    key, value = PAGE_WIDGETS.get(page, (None, None))
    for w in widgets:
        if w.key == key:
            return w, value, "chosen"
    for w in widgets:
        change = _auto_change(w)
        if change is not None:
            return w, change, "auto-picked" + (f"; {key!r} not found" if key else "")
    return None, None, "no simple widget on the page"


def _set(widget, value):
    if isinstance(value, tuple) and value and value[0] == "index":
        return widget.select_index(value[1])
    return widget.set_value(value)


def warm_rerun(page: str, timeout_s: float = 180) -> dict:
    """Seconds for the page's rerun after one widget change, in AppTest (page run once first)."""
    from streamlit.testing.v1 import AppTest

    name = page or "home"
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout_s)
    at.run()
    if page:
        at.switch_page(lesson(page).page).run()
    if at.exception:
        return _row(f"warm rerun of {name}: the page raised {at.exception[0].message[:80]!r} at defaults",
                    float("nan"), "s", f"<= {RERUN_TARGET_S} s", False, baseline="AppTest run")
    widget, value, how = _pick_widget(at, page)
    if widget is None:
        return _row(f"warm rerun of {name} after one widget change (skipped: {how})", float("nan"), "s",
                    f"<= {RERUN_TARGET_S} s", None, baseline="AppTest rerun")
    key = widget.key
    back = ("index", widget.index) if isinstance(value, tuple) else widget.value
    times = []
    for new in (value, back, value):  # first change, back, and the same change again (all caches warm)
        w = next(n for n in _walk(at.main) if getattr(n, "key", None) == key)
        t = time.perf_counter()
        _set(w, new).run()
        times.append(time.perf_counter() - t)
        if at.exception:
            return _row(f"warm rerun of {name}: {key} -> {value!r} raised {at.exception[0].message[:80]!r}",
                        times[0], "s", f"<= {RERUN_TARGET_S} s", False, baseline="AppTest rerun")
    shown = f"option #{value[1]}" if isinstance(value, tuple) else repr(value)
    return _row(f"warm rerun of {name} after one widget change ({key} -> {shown}, {how})", times[0], "s",
                f"<= {RERUN_TARGET_S} s", times[0] <= RERUN_TARGET_S,
                baseline=f"AppTest rerun, first change; again with every cache warm: {times[2]:.3f} s")


def session_memory(n: int = 10, settle_s: float = 3.0) -> list[dict]:
    """Server RSS with 1 and with ``n`` websocket sessions open (each rendered MEMORY_PAGES); MB per extra one.

    Also the server's CPU seconds per rerun of the home page: the floor every student interaction pays.
    """
    proc, url = start_server()
    sessions = []
    try:
        def open_one():
            s = Session(url, timeout=180)
            sessions.append(s)
            for page in MEMORY_PAGES:
                r = s.run(page)
                if not r.ok:
                    raise RuntimeError(f"page {page!r} did not render: {r}")

        open_one()
        time.sleep(settle_s)
        rss1 = rss_mb(proc.pid)
        for _ in range(n - 1):
            open_one()
        time.sleep(settle_s)
        rssn = rss_mb(proc.pid)
        c0 = cpu_s(proc.pid)
        reruns = [sessions[0].run("") for _ in range(5)]
        cpu_home = (cpu_s(proc.pid) - c0) / len(reruns)
    finally:
        for s in sessions:
            s.close()
        stop_server(proc)
    per = (rssn - rss1) / (n - 1)
    pages = " + ".join(p or "home" for p in MEMORY_PAGES)
    return [
        _row(f"server memory per additional student session (defaults, {pages})", per, "MB",
             f"<= {SESSION_TARGET_MB} MB", per <= SESSION_TARGET_MB, baseline=f"(RSS {n} sessions - RSS 1) / {n - 1}"),
        _row("server RSS with 1 session open", rss1, "MB", "report", None),
        _row(f"server RSS with {n} sessions open", rssn, "MB", "report", None),
        _row("server CPU per rerun of the home page (websocket session)", cpu_home, "s", "report", None,
             baseline=f"median wall {sorted(r.seconds for r in reruns)[2]:.3f} s"),
    ]


def _guarded(figure: str, target: str, make) -> list[dict]:
    """``make()``'s rows, or one failed row naming the error: one broken page must not hide the others."""
    try:
        rows = make()
        return rows if isinstance(rows, list) else [rows]
    except Exception as e:  # noqa: BLE001
        return [_row(f"{figure} FAILED: {type(e).__name__}: {str(e)[:120]}", float("nan"), "", target, False)]


def run() -> list[dict]:
    texts = page_texts()
    rows = _guarded("cold start", "report", lambda: cold_start(texts[""]))
    for page in texts:
        rows += _guarded(f"warm rerun of {page or 'home'}", f"<= {RERUN_TARGET_S} s", lambda p=page: warm_rerun(p))
    rows += _guarded("memory per session", f"<= {SESSION_TARGET_MB} MB", session_memory)
    return rows
