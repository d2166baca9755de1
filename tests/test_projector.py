"""Projector mode: every text and line of a chart scaled up, nothing else changed, the original left alone."""
import json

import numpy as np
import plotly.graph_objects as go
import pytest

from resviz.plots.projector import PLOTLY_FONT_PX, PLOTLY_LINE_PX, for_projector


def test_explicit_sizes_are_scaled_and_nothing_else():
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 2], mode="lines+markers", line_width=3, marker_size=9,
                               textfont_size=10))
    fig.add_trace(go.Histogram(x=[1, 2, 2, 3], xbins=dict(size=0.5), marker_line_width=1))
    fig.update_layout(font_size=14, title=dict(text="t", font_size=17), width=700, legend_font_size=13)
    fig.update_xaxes(tickfont_size=15, title_font_size=16, linewidth=2)
    fig.add_annotation(text="note", font_size=11, x=0, y=0)
    fig.add_shape(type="line", x0=0, x1=1, y0=0, y1=1, line_width=4)
    big = for_projector(fig, 2)

    assert (big.layout.font.size, big.layout.title.font.size, big.layout.legend.font.size) == (28, 34, 26)
    assert (big.layout.xaxis.tickfont.size, big.layout.xaxis.title.font.size) == (30, 32)
    assert big.layout.annotations[0].font.size == 22 and big.layout.shapes[0].line.width == 8
    assert big.data[0].line.width == 6 and big.data[0].textfont.size == 20 and big.data[1].marker.line.width == 2
    # Not text, not lines: the figure's width, an axis line, marker sizes, histogram bins.
    assert big.layout.width == 700 and big.layout.xaxis.linewidth == 2
    assert big.data[0].marker.size == 9 and big.data[1].xbins.size == 0.5
    assert fig.layout.font.size == 14 and fig.data[0].line.width == 3  # the original is untouched


def test_plotly_defaults_are_scaled_too():
    big = for_projector(go.Figure(go.Scatter(y=np.arange(30.0))), 1.5)
    assert big.layout.font.size == pytest.approx(PLOTLY_FONT_PX * 1.5)
    assert big.data[0].line.width == pytest.approx(PLOTLY_LINE_PX * 1.5)


def test_per_label_sizes_are_scaled_each():
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="text", text=["a", "b"], textfont_size=np.array([10, 20])))
    assert list(for_projector(fig, 1.5).data[0].textfont.size) == [15, 30]


def test_projector_scales_the_page_text_and_is_in_the_link():
    """On a projector every text a back row reads grows (Streamlit sizes body text, captions, tables and widget
    labels in rem), not only the charts; the switch is bound to the URL, so a reload or a shared link keeps it."""
    from helpers import new_app
    from resviz import ui

    def styles(at):
        return [h.proto.body for h in at.get("html")]

    off, on = new_app(), new_app(sidebar={"projector": True})
    rule = f"html {{font-size: {ui.PROJECTOR_TEXT_PX}px;}}"
    assert not any(rule in s for s in styles(off)) and any(rule in s for s in styles(on))
    assert ui.PROJECTOR_TEXT_PX > 16  # larger than Streamlit's own 16 px
    assert on.query_params.get("projector") in (["true"], "true")


# --- no text over text at x1.4, in real Chromium -------------------------------------------------------------
# Each figure's text boxes as Chromium lays them out: titles, axis titles, legends, annotations (subplot titles,
# stage names), colour bars and tick labels; and the plot areas. Read by ``text_collisions`` (also on the pages).
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


def _lesson_figures():
    """Each lesson figure of layoutB's pages and of Signal flow, with realistic sizes (ResNet-20: 9 blocks, 19
    convs; 256-point sweeps), and the width in px the page gives it at 1280x720 with Projector on."""
    from resviz.lessons import landscape, lesion, paths, shattered, signal_flow
    from resviz.plots import landscape as pl, lesion as plo, paths as pp, shattered as ps, signal_flow as psf

    names = tuple(f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3))
    down = np.array([n.endswith(".0") and n != "layer1.0" for n in names])
    rng = np.random.default_rng(0)
    res = lesion.LesionResult(names, rng.uniform(0.5, 0.97, 9), np.ones(9, bool), down, 0.974, 500)
    plain = lesion.LesionResult(names, np.where(down, np.nan, rng.uniform(0.05, 0.2, 9)), ~down, down, 0.972, 500)
    a = np.linspace(-1, 1, 13)
    bowl = landscape.Grid(a, a, 0.01 + np.add.outer(a**2, a**2) * 50, np.zeros((13, 13)), 2)
    grids = landscape.PairGrids(bowl, bowl)
    line = landscape.PairGrids(*(landscape.Grid(a, a[:1], 0.01 + 50 * a**2, 0 * a, 1),) * 2)
    sweeps = [shattered.shattered_sweep(shattered.SweepConfig(depth=24, residual=r)) for r in (False, True)]
    draws = rng.uniform(0, 1, (5, len(shattered.DEPTHS)))
    curve = shattered.DepthCurve(shattered.DEPTHS, draws.mean(0), draws.mean(0), draws, draws, tuple(range(5)))
    flow = signal_flow.measure(signal_flow.Settings(signal_flow.cifar_config(20), steps=2))
    full, half = 780, 380  # the main column; half of it (Signal flow's two charts side by side)
    return {"lesion": (plo.plot_lesion(lesion.LesionComparison(res, plain, 0.1)), full),
            "paths": (pp.plot_path_gradients(paths.from_per_path(np.geomspace(0.02, 0.07, 10), 9)), full),
            "paths, sampled": (pp.plot_path_gradients(paths.from_per_path(np.geomspace(0.02, 0.07, 10), 9,
                                                                          rng.uniform(0, 1, (10, 2)))), full),
            "shattered sweep": (ps.plot_shattered(*sweeps, 24), full),
            "shattered depth": (ps.plot_depth_curve(curve, 24), full),
            "landscape 1-D": (pl.plot_landscape_1d(line), full),
            "landscape contours": (pl.plot_landscape_contours(grids), full),
            "landscape bends": (pl.plot_negative_curvature(grids), full),
            "signal flow act": (psf.plot_layer_stat(flow, "act_rms"), half),
            "signal flow grad": (psf.plot_layer_stat(flow, "grad_rms"), half),
            "signal flow wgrad": (psf.plot_layer_stat(flow, "weight_grad_rms"), full),
            "signal flow responses": (psf.plot_responses(flow), full),
            "signal flow losses": (psf.plot_losses(flow), full)}


@pytest.mark.browser
def test_lesson_charts_at_x1_4_have_no_text_over_text(page):
    """Drawn by plotly.js in Chromium at the width the page gives them, Projector on: no title over a legend, no
    tick label cut, no legend or axis title over a plot, for each chart of Lesion, Paths, Shattered, Loss
    landscape and Signal flow."""
    from pathlib import Path

    import plotly

    page.set_content("<div id='chart'></div>")
    page.add_script_tag(path=str(Path(plotly.__file__).parent / "package_data" / "plotly.min.js"))
    found = {}
    for name, (fig, width) in _lesson_figures().items():
        spec = json.loads(for_projector(fig).update_layout(width=width).to_json())
        page.evaluate("(spec) => Plotly.newPlot('chart', spec.data, spec.layout)", spec)
        found[name] = text_collisions(page.locator("#chart").evaluate(CHART_TEXTS_JS))
    assert not any(found.values()), {k: v for k, v in found.items() if v}
