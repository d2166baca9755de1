"""Figures for the shortcut lab: the 1x1 convolution as a matrix, the pixels a stride keeps, bottleneck costs."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resviz.lessons.shortcut_lab import BlockCost, PixelProduct

DIVERGING = "RdBu_r"  # red positive, blue negative, white zero
MAX_TEXT = 12  # write the numbers into the cells only while they stay readable


def _cells(values: np.ndarray, digits: int) -> np.ndarray | None:
    return np.vectorize(lambda v: f"{round(float(v), digits) + 0.0:g}")(values) if max(values.shape) <= MAX_TEXT else None


def plot_pixel_product(p: PixelProduct) -> go.Figure:
    """W (C_out x C_in) times the input pixel's channel vector x gives the output pixel's vector y."""
    w = p.weight
    rows, cols = w.shape
    x, y = p.x_vec[:cols, None], p.y_conv[:rows, None]
    w_lim = float(max(np.abs(w).max(), 1e-6))  # weights get their own scale: they are much smaller than x
    v_lim = float(max(np.abs(x).max(), np.abs(y).max(), 1e-6))
    fig = make_subplots(rows=1, cols=3, column_widths=[0.7, 0.12, 0.12], horizontal_spacing=0.08, subplot_titles=(
        f"W: 1x1 conv weights ({p.weight_shape[0]} out × {p.weight_shape[1]} in)"
        + ("" if (rows, cols) == tuple(p.weight_shape) else f", first {rows}×{cols} shown"),
        f"x at input pixel {p.in_pixel}", f"y = W·x at output {p.out_pixel}"))
    bars = ({"title": "weight", "x": 1.0, "len": 0.45, "y": 0.78}, {"title": "x, y", "x": 1.0, "len": 0.45, "y": 0.22})
    for i, (z, digits, lim) in enumerate(((w, 4, w_lim), (x, 1, v_lim), (y, 3, v_lim))):
        fig.add_trace(go.Heatmap(z=z, zmin=-lim, zmax=lim, colorscale=DIVERGING, showscale=i < 2,
                                 text=_cells(z, digits), texttemplate="%{text}" if max(z.shape) <= MAX_TEXT else None,
                                 colorbar=bars[min(i, 1)],
                                 hovertemplate="row %{y}, column %{x}: %{z:.3f}<extra></extra>"), 1, i + 1)
        fig.update_yaxes(autorange="reversed", row=1, col=i + 1)
        fig.update_xaxes(showticklabels=i == 0, row=1, col=i + 1)
    fig.update_xaxes(title_text="input channel", row=1, col=1)
    fig.update_yaxes(title_text="output channel", row=1, col=1)
    fig.update_yaxes(title_text="input channel", row=1, col=2)
    fig.update_yaxes(title_text="output channel", row=1, col=3)
    fig.update_layout(height=max(320, min(640, 28 * rows + 140)), margin={"t": 60, "b": 60})
    return fig


def plot_kept_pixels(kept: np.ndarray, in_pixel: tuple[int, int], stride: int) -> go.Figure:
    """The input grid: which pixels a stride-s 1x1 conv reads (dark) and which it never looks at."""
    h, w = kept.shape
    fig = go.Figure(go.Heatmap(z=kept.astype(int), zmin=0, zmax=1, colorscale=[[0, "#eeeeee"], [1, "#2b6cb0"]],
                               showscale=False, xgap=1, ygap=1,
                               hovertemplate="row %{y}, column %{x}<extra></extra>"))
    if h * w <= 400:
        rr, cc = np.nonzero(kept)
        fig.add_trace(go.Scatter(x=cc, y=rr, mode="text", text=[f"{r // stride},{c // stride}" for r, c in zip(rr, cc)],
                                 textfont={"color": "white", "size": 10}, hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter(x=[in_pixel[1]], y=[in_pixel[0]], mode="markers",
                             name="the input pixel in the product above",
                             marker={"symbol": "square-open", "size": 18, "color": "#e53e3e", "line": {"width": 3}}))
    fig.update_yaxes(autorange="reversed", title_text="input row", scaleanchor="x", constrain="domain")
    fig.update_xaxes(title_text="input column", constrain="domain")
    fig.update_layout(title=f"Stride {stride}: {int(kept.sum())} of {h * w} input pixels are read "
                            f"(blue, labelled with their output position)",
                      height=min(560, max(300, 22 * h + 120)), margin={"t": 50}, legend={"orientation": "h"})
    return fig


def plot_bottleneck_costs(costs: tuple[BlockCost, ...]) -> go.Figure:
    """Parameters and MACs of each block design, side by side."""
    names = [c.short for c in costs]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("parameters (main path)", "multiply-accumulates (main path)"))
    for col, key in ((1, "params"), (2, "macs")):
        vals = [getattr(c, key) for c in costs]
        fig.add_trace(go.Bar(x=names, y=vals, text=[f"{v:,}" for v in vals], textposition="outside",
                             marker_color=["#2b6cb0", "#3182ce", "#c05621", "#718096"], showlegend=False), 1, col)
        fig.update_yaxes(range=[0, max(vals) * 1.18], row=1, col=col)
    fig.update_xaxes(tickangle=0, tickfont={"size": 11})
    fig.update_layout(height=460, margin={"t": 40, "b": 90})
    return fig
