"""Shared test helpers, in one module: AppTest runs and what they show, tiny models, the files a student uploads
(PNGs, bombs, zips, saved state dicts), and the browser helpers of resviz.tools. Fixtures live in conftest.py.

    from helpers import new_app, no_exceptions, texts, png, tiny_model
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import torch
from PIL import Image

from resviz import models
from resviz.lessons import LESSONS, lesson
from resviz.tools import browser
from resviz.tools.browser import open_page, page_exceptions, wait_idle  # noqa: F401 - re-exported for tests
from resviz.tools.server import start_server, stop_server

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / Path(LESSONS[0].page).parent  # the folder of the page scripts (home and the lessons)
# Screenshots go to a temp folder; RESVIZ_SCREENSHOTS=assets/screenshots refreshes the README's.
SCREENSHOTS = Path(os.environ.get("RESVIZ_SCREENSHOTS", "/tmp/resviz-screenshots"))
TEXT_KINDS = ("title", "header", "subheader", "markdown", "caption", "info", "success", "warning", "error")


# --- AppTest ---------------------------------------------------------------------------------------------
# The pair pages start from the shipped pair; page tests pick "train a pair here" unless they say otherwise, so each
# studies the tiny pair it hands the page (test_pair_shipped.py tests the shipped default)
TRAIN_HERE = {f"{prefix}_pair_choice": "train" for prefix in ("le", "ls", "pa")}


def new_app(page: str | None = None, timeout: float = 60, sidebar: dict | None = None):
    """An AppTest of the whole app, run once, then switched to the lesson ``page`` and run.

    AppTest reruns a page on its own, without app.py's sidebar, so the app-wide model is chosen before the
    first run: ``sidebar={"sel_family": "ImageNet", "sel_imagenet": "resnet50"}`` gives those sidebar widgets
    their values (by key); the page then reads the selection from session state.
    """
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    for key, value in {**TRAIN_HERE, **(sidebar or {})}.items():
        at.session_state[key] = value
    at.run()
    if page:
        at.switch_page(lesson(page).page).run()
    return at


def checked_app(page: str | None = None, timeout: float = 60, sidebar: dict | None = None):
    """``new_app(...)`` that has run with no exception box (a page test's module fixture)."""
    at = new_app(page, timeout, sidebar)
    no_exceptions(at)
    return at


def no_exceptions(at) -> None:
    """Fail with the page's own text if it shows an exception box."""
    assert not at.exception, [e.message for e in at.exception]


def texts(at, kinds: tuple[str, ...] = TEXT_KINDS) -> str:
    """Every text the page shows in elements of these kinds (titles, markdown, captions, alerts...), one a line."""
    return "\n".join(str(e.value) for kind in kinds for e in getattr(at, kind))


def figures(at) -> list[dict]:
    """Every plotly chart on the page, as its JSON spec (``data`` and ``layout``)."""
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def figure(at, key: str) -> dict:
    """The plotly chart drawn with ``key=key``, as its JSON spec; fails with what the page shows instead."""
    found = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert found, (key, [c.proto.id for c in at.get("plotly_chart")], texts(at, ("error", "warning", "info")),
                   [e.message for e in at.exception])
    return json.loads(found[0].proto.spec)


# --- models ----------------------------------------------------------------------------------------------
TINY = dict(block="basic", layers=(1, 1), widths=(4, 8), stem="cifar", stem_width=4, input_size=8, num_classes=4,
            shortcut="A", name="tiny")


def tiny_config(**overrides) -> models.ResNetConfig:
    """A two-stage ResNet of width 4-8 on 8x8 inputs (overrides: any ResNetConfig field): runs in milliseconds."""
    return models.ResNetConfig(**{**TINY, **overrides})


def tiny_model(seed: int = 0, frozen: bool = False, **overrides) -> models.ResNet:
    """``tiny_config(**overrides)`` built with ``seed``, in eval mode; ``frozen`` like the app's shared models."""
    model = models.build_model(tiny_config(**overrides), seed=seed).eval()
    for p in model.parameters():
        p.requires_grad_(not frozen)
    return model


# --- files a student uploads -----------------------------------------------------------------------------
def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    """``img`` saved in ``fmt`` (PNG, JPEG, WEBP, BMP...), as the bytes of an upload."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png(size: tuple[int, int] = (40, 30), color=120, mode: str = "RGB") -> bytes:
    """A plain PNG of one colour."""
    return encode(Image.new(mode, size, color))


def bomb_png(w: int = 100_000, h: int = 100_000) -> bytes:
    """A 1x1 PNG whose header claims w x h pixels: what a decompression bomb looks like before decoding."""
    data = bytearray(png((1, 1), 0, "L"))
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", w, h)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip archive holding ``{name: payload}`` (deflated, or ``method``)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return buf.getvalue()


def saved(obj) -> bytes:
    """``torch.save(obj)`` as bytes: a state-dict upload."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# --- browser ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def served(**kwargs):
    """``streamlit run`` (``start_server(**kwargs)``) for the with-block: yields (process, base URL), then stops it."""
    proc, url = start_server(**kwargs)
    try:
        yield proc, url
    finally:
        stop_server(proc)


def served_app(folder: Path, source: str):
    """``served`` for a tiny app of its own: ``folder``/app.py holding ``source``, beside links to resviz and
    .streamlit (the classroom settings), no warm-up; its log is ``folder``/log.txt."""
    for name in ("resviz", ".streamlit"):
        (folder / name).symlink_to(ROOT / name)
    (folder / "app.py").write_text(source)
    return served(script="app.py", cwd=folder, log_path=folder / "log.txt", env={"RESVIZ_WARM_UP": "0"})


def screenshot(pg, name: str) -> Path:
    """Save a full-page PNG as SCREENSHOTS/<name>.png and return its path (open it and look)."""
    return browser.screenshot(pg, SCREENSHOTS / f"{name}.png", full=True)


def visit(pg, base_url: str, path: str, *expected: str) -> str:
    """Open the page at ``path`` in Chromium, check it shows no exception box and every ``expected`` text, save
    its screenshot (named after the page); returns the page's text."""
    open_page(pg, base_url, path)
    for text in expected:  # drawn, not just an idle look: pages draw their heavy parts after their first screen
        pg.get_by_text(text).first.wait_for(timeout=90_000)
    assert page_exceptions(pg) == []
    body = pg.inner_text("body")
    assert [t for t in expected if t not in body] == [], body[:2000]
    screenshot(pg, path or "home")
    return body


# --- no text over text at x1.4, in real Chromium ---------------------------------------------------------
# Each figure's text boxes as Chromium lays them out: titles, axis titles, legends, annotations (subplot titles,
# stage names), colour bars and tick labels; and the plot areas. Read by ``text_collisions`` (on the pages too).
CHART_TEXTS_JS = """(root) => {
  const box = (e) => { const b = e.getBoundingClientRect(); return {x: b.left, y: b.top, w: b.width, h: b.height}; };
  const svg = root.querySelector('svg.main-svg');
  if (!svg) return null;
  const items = [];
  const add = (kind, e, text) => {
    const b = box(e);
    if (b.w > 0.5 && b.h > 0.5 && (text || '').trim()) items.push({kind, text: text.trim().slice(0, 50), ...b});
  };
  root.querySelectorAll('.g-gtitle text').forEach(e => add('title', e, e.textContent));
  root.querySelectorAll('g[class^="g-x"][class$="title"] text, g[class^="g-y"][class$="title"] text')
    .forEach(e => add('axis title', e, e.textContent));
  root.querySelectorAll('.infolayer .legend').forEach(e => add('legend', e.querySelector('.bg') || e, e.textContent));
  root.querySelectorAll('.infolayer .legend .traces').forEach(e => add('legend entry', e, e.textContent));
  root.querySelectorAll('.annotation').forEach(e => add('annotation', e.querySelector('.annotation-text-g') || e,
                                                        e.textContent));
  root.querySelectorAll('.colorbar').forEach(e => add('colour bar', e, e.textContent || 'colour bar'));
  root.querySelectorAll('.xtick text, .ytick text').forEach(e => add('tick label', e, e.textContent));
  return {chart: box(svg), items, areas: Array.from(root.querySelectorAll('.draglayer .nsewdrag')).map(box)};
}"""


def _overlap(a: dict, b: dict, tol: float = 1.0) -> bool:
    return (min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"]) > tol
            and min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"]) > tol)


def _inside(a: dict, box: dict, tol: float = 1.0) -> bool:
    return (a["x"] >= box["x"] - tol and a["y"] >= box["y"] - tol and a["x"] + a["w"] <= box["x"] + box["w"] + tol
            and a["y"] + a["h"] <= box["y"] + box["h"] + tol)


def text_collisions(texts: dict | None) -> list[str]:
    """What a back row could not read in one chart (``CHART_TEXTS_JS``'s answer): a text cut at the chart's edge,
    two texts over each other (tick labels of one axis excepted: plotly spaces those), a legend, title, axis title
    or tick label over a plot (annotations may sit inside one on purpose)."""
    if not texts:
        return []
    items, out = texts["items"], []
    out += [f"{a['kind']} '{a['text']}' cut at the chart's edge" for a in items if not _inside(a, texts["chart"])]
    for i, a in enumerate(items):
        out += [f"{a['kind']} '{a['text']}' over {b['kind']} '{b['text']}'" for b in items[i + 1:]
                if _overlap(a, b) and not a["kind"] == b["kind"] == "tick label"
                and ("legend entry" not in (a["kind"], b["kind"]) or a["kind"] == b["kind"])]
        if a["kind"] in ("legend", "axis title", "tick label", "title") and any(
                _overlap(a, area, 2.0) for area in texts["areas"]):
            out.append(f"{a['kind']} '{a['text']}' over a plot")
    return out


def chart_collisions(pg, charts: dict) -> dict[str, list[str]]:
    """``{name: (figure, width in px)}`` each drawn by plotly.js in Chromium at that width with Projector on (an empty
    page of its own): ``text_collisions`` of each, by name."""
    import plotly

    from resviz.plots.projector import for_projector

    pg.set_content("<div id='chart'></div>")
    pg.add_script_tag(path=str(Path(plotly.__file__).parent / "package_data" / "plotly.min.js"))
    found = {}
    for name, (fig, width) in charts.items():
        spec = json.loads(for_projector(fig).update_layout(width=width).to_json())
        pg.evaluate("(spec) => Plotly.newPlot('chart', spec.data, spec.layout)", spec)
        found[name] = text_collisions(pg.locator("#chart").evaluate(CHART_TEXTS_JS))
    return found


# --- the lesson-claims check, in the background ----------------------------------------------------------
class ClaimsCheck:
    """``python -m resviz.claims --only <lessons>`` in a child process at the lowest priority (nice 19), started when
    the session starts (conftest.py): it uses the CPU the rest of the suite leaves idle (a core while AppTest runs a
    page on one thread, the browser tests' waits) and never slows a test that measures time. The lesson-claims tests
    run last and read its claims back: the same claims, seeds and sizes as ``lesson_claims`` in the test process.
    Once a claims test waits, nothing else of the suite runs: the check gets the suite's own priority back."""

    def __init__(self, lessons: list[str], folder: Path):
        self.lessons, self.json = lessons, folder / f"claims-{'-'.join(lessons)}.json"
        self.log = folder / f"claims-{'-'.join(lessons)}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["nice", "-n", "19", sys.executable, "-m", "resviz.claims", "--only",
                                          *lessons, "--json", str(self.json)], cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT)

    def claims(self, lesson: str, timeout_s: float = 3600):
        """The claims of ``lesson`` once the check has finished; fails with its output if it wrote none."""
        from resviz.claims import from_json

        self.proc.wait(timeout_s)
        assert self.json.is_file(), f"python -m resviz.claims exited {self.proc.returncode}:\n{self.log.read_text()}"
        return from_json(self.json.read_text())[lesson]

    def hurry(self) -> None:
        """Every thread of the check at this process's priority (where the system allows raising it: root, or
        RLIMIT_NICE), so a machine others load does not starve it once the rest of the suite is done."""
        own = os.getpriority(os.PRIO_PROCESS, 0)
        try:
            threads = os.listdir(f"/proc/{self.proc.pid}/task")  # nice is per thread on Linux
        except OSError:  # ended, or no /proc
            return
        for tid in threads:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, int(tid), own)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
