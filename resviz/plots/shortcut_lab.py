"""Figures for the shortcut lab: the 1x1 convolution as a matrix, the pixels a stride keeps, bottleneck costs."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resviz.lessons.shortcut_lab import BlockCost, PixelProduct
from resviz.plots.projector import SCALE

DIVERGING = "RdBu_r"  # red positive, blue negative, white zero
MAX_TEXT = 12  # write the numbers into the cells only while they stay readable
MAX_PIXEL_TEXT = 144  # label the kept pixels with their output position on grids up to 12x12
FONT = dict(size=14, color="#1a1a1a")  # at least 14 px and dark: readable from the back of a classroom
TITLE_PX, SUBTITLE_PX = 17, 16  # the figure's title; subplot titles (``_readable``)
LINE_EM = 1.3  # a line of text is about 1.3 times its font size tall; room is made for the Projector's x SCALE
PICKED = "#e53e3e"  # the input pixel of the product, framed on the grid of kept pixels
BAR_COLORS = ["#2b6cb0", "#3182ce", "#c05621", "#718096"]  # the two bottlenecks blue, the 3x3 pairs orange and grey


def _readable(fig: go.Figure) -> go.Figure:
    """Every title, tick, legend and colour-bar text at 14 px (titles 16) and dark."""
    fig.update_layout(font=FONT, legend_font=FONT, hoverlabel_font_size=FONT["size"])
    fig.update_xaxes(tickfont=FONT, title_font=FONT)
    fig.update_yaxes(tickfont=FONT, title_font=FONT)
    fig.update_annotations(font=dict(size=16, color=FONT["color"]))  # subplot titles
    return fig


def _cells(values: np.ndarray, digits: int) -> np.ndarray | None:
    return np.vectorize(lambda v: f"{round(float(v), digits) + 0.0:g}")(values) if max(values.shape) <= MAX_TEXT else None


def plot_pixel_product(p: PixelProduct) -> go.Figure:
    """W (C_out x C_in) times the input pixel's channel vector x gives the output pixel's vector y."""
    w = p.weight
    rows, cols = w.shape
    x, y = p.x_vec[:cols, None], p.y_conv[:rows, None]
    w_lim = float(max(np.abs(w).max(), 1e-6))  # weights get their own scale: they are much smaller than x
    v_lim = float(max(np.abs(x).max(), np.abs(y).max(), 1e-6))
    # The pixels go in the figure's title, across the whole width: over the narrow x and y columns, titles that
    # name them overlapped once the Projector toggle scaled the text up.
    fig = make_subplots(rows=1, cols=3, column_widths=[0.6, 0.15, 0.15], horizontal_spacing=0.1, subplot_titles=(
        f"W: 1x1 conv weights<br>({p.weight_shape[0]} out × {p.weight_shape[1]} in)"
        + ("" if (rows, cols) == tuple(p.weight_shape) else f", first {rows}×{cols} shown"),
        "x (input)", "y = W·x (output)"))
    bars = [{"title": {"text": name, "font": FONT}, "x": 1.0, "len": 0.45, "y": y, "tickfont": FONT,
             "tickvals": [-lim, 0, lim], "ticktext": [f"{-lim:.2g}", "0", f"{lim:.2g}"]}  # 3 ticks: room on a projector
            for name, y, lim in (("weight", 0.78, w_lim), ("x, y", 0.22, v_lim))]
    for i, (z, digits, lim) in enumerate(((w, 4, w_lim), (x, 1, v_lim), (y, 3, v_lim))):
        fig.add_trace(go.Heatmap(z=z, zmin=-lim, zmax=lim, colorscale=DIVERGING, showscale=i < 2,
                                 text=_cells(z, digits), texttemplate="%{text}" if max(z.shape) <= MAX_TEXT else None,
                                 textfont=dict(size=14),
                                 colorbar=bars[min(i, 1)],
                                 hovertemplate="row %{y}, column %{x}: %{z:.3f}<extra></extra>"), 1, i + 1)
        fig.update_yaxes(autorange="reversed", row=1, col=i + 1)
        fig.update_xaxes(showticklabels=i == 0, row=1, col=i + 1)
    fig.update_xaxes(title_text="input channel", row=1, col=1)
    fig.update_yaxes(title_text="output channel", row=1, col=1)
    top = 8 + LINE_EM * SCALE * (TITLE_PX + 2 * SUBTITLE_PX) + 8  # the title, then two lines of subplot titles
    fig.update_layout(title=dict(text=f"Input pixel {p.in_pixel} → output pixel {p.out_pixel}", x=0, xanchor="left",
                                 yref="container", y=1, yanchor="top", pad={"t": 8}, font={"size": TITLE_PX}),
                      height=max(380, min(720, 30 * rows + 190)), margin={"t": round(top), "b": 60})
    return _readable(fig)


def plot_kept_pixels(kept: np.ndarray, in_pixel: tuple[int, int], stride: int) -> go.Figure:
    """The input grid: which pixels a stride-s 1x1 conv reads (dark) and which it never looks at."""
    h, w = kept.shape
    fig = go.Figure(go.Heatmap(z=kept.astype(int), zmin=0, zmax=1, colorscale=[[0, "#eeeeee"], [1, "#2b6cb0"]],
                               showscale=False, xgap=1, ygap=1,
                               hovertemplate="row %{y}, column %{x}<extra></extra>"))
    if h * w <= MAX_PIXEL_TEXT:
        rr, cc = np.nonzero(kept)
        fig.add_trace(go.Scatter(x=cc, y=rr, mode="text", text=[f"{r // stride},{c // stride}" for r, c in zip(rr, cc)],
                                 textfont={"color": "white", "size": 14}, hoverinfo="skip", showlegend=False))
    # the picked pixel framed along its cell's edges (a marker over its centre hid its label on a projector)
    r, c = in_pixel
    fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5, line={"color": PICKED, "width": 3})
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="the input pixel in the product above",
                             marker={"symbol": "square-open", "size": 18, "color": PICKED, "line": {"width": 3}}))
    fig.update_yaxes(autorange="reversed", title_text="input row", scaleanchor="x", constrain="domain")
    fig.update_xaxes(title_text="input column", constrain="domain")
    labelled = ", labelled with their output position" if h * w <= MAX_PIXEL_TEXT else ""
    fig.update_layout(title=dict(text=f"Stride {stride}: {int(kept.sum())} of {h * w} input pixels are read "
                                      f"(blue{labelled})", font=dict(size=16)),
                      height=min(600, max(340, 30 * h + 140)), margin={"t": 50}, legend={"orientation": "h"})
    return _readable(fig)


def plot_bottleneck_costs(costs: tuple[BlockCost, ...]) -> go.Figure:
    """Parameters and MACs of each block design, side by side: one bar a design, named once on the left (names under
    four narrow upright bars ran into each other at the Projector's x1.4 on a 1280 px screen)."""
    names = [(lambda first, *rest: "<br>".join([first, " ".join(rest)] if rest else [first]))(*c.short.split("<br>"))
             for c in costs]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=("parameters<br>(main path)", "multiply-accumulates<br>(main path)"))
    for col, key in ((1, "params"), (2, "macs")):
        vals = [getattr(c, key) for c in costs]
        fig.add_trace(go.Bar(y=names, x=vals, orientation="h", text=[f"{v:,}" for v in vals], textposition="auto",
                             textfont=FONT, insidetextfont={**FONT, "color": "white"}, cliponaxis=False,
                             showlegend=False, marker_color=BAR_COLORS), 1, col)
        fig.update_xaxes(range=[0, max(vals) * 1.05], nticks=4, row=1, col=col)  # long bars hold their number
    fig.update_yaxes(autorange="reversed", automargin=True)  # the paper's design first, at the top
    lines = max(n.count("<br>") + 1 for n in names)
    fig.update_layout(height=round(70 + len(names) * (lines + 1) * LINE_EM * FONT["size"] * SCALE),
                      margin={"t": round(8 + 2 * LINE_EM * SUBTITLE_PX * SCALE), "l": 10, "r": 10, "b": 40},
                      bargap=0.25)  # t: two lines of subplot title, at projector scale too
    return _readable(fig)
