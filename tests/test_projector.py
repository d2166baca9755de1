"""Projector mode: every text and line of a chart scaled up, nothing else changed, the original left alone."""

import numpy as np
import plotly.graph_objects as go
import pytest

from helpers import chart_collisions
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


# --- no text over text at x1.4, in real Chromium (the checker: helpers.text_collisions) ---------------------
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
    found = chart_collisions(page, _lesson_figures())
    assert not any(found.values()), {k: v for k, v in found.items() if v}
