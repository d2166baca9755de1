"""Figures for the 'beyond the paper' pages: lesion study, paths, shattered gradients, loss landscapes.

Numpy/dict results in, plotly Figures out; never imports streamlit.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

RES_COLOR, PLAIN_COLOR, DOWN_COLOR = "#1f77b4", "#d62728", "rgba(120,120,120,0.18)"


def plot_lesion(res: dict, plain: dict, chance: float | None = None) -> go.Figure:
    """Test accuracy with each block deleted, ResNet vs plain twin; downsampling blocks shaded."""
    names = res["names"]
    fig = go.Figure()
    for i, down in enumerate(res["downsampling"]):
        if down:
            fig.add_vrect(x0=i - 0.5, x1=i + 0.5, fillcolor=DOWN_COLOR, line_width=0,
                          annotation_text="downsampling", annotation_position="top left")
    for r, label, color in ((res, "ResNet", RES_COLOR), (plain, "plain twin", PLAIN_COLOR)):
        acc = np.where(r["possible"], r["accuracy"], np.nan) * 100
        fig.add_scatter(x=names, y=acc, mode="lines+markers", name=f"{label}: one block deleted",
                        line=dict(color=color), connectgaps=False)
        fig.add_scatter(x=names, y=[r["intact"] * 100] * len(names), mode="lines", line=dict(color=color, dash="dash"),
                        name=f"{label}, nothing deleted: {r['intact']:.1%}")
    impossible = [n for n, ok in zip(plain["names"], plain["possible"]) if not ok]
    if impossible:
        fig.add_scatter(x=impossible, y=[2] * len(impossible), mode="markers+text", name="plain: cannot delete",
                        marker=dict(symbol="x", size=12, color=PLAIN_COLOR), text=["cannot delete"] * len(impossible),
                        textposition="top center")
    if chance is not None:
        fig.add_scatter(x=names, y=[chance * 100] * len(names), mode="lines", line=dict(color="gray", dash="dot"),
                        name=f"chance ({chance:.0%})")
    fig.update_layout(xaxis_title="deleted block", yaxis_title="test accuracy (%)", yaxis_range=[0, 105],
                      legend=dict(orientation="h", y=-0.22), height=480)
    return fig


def plot_path_gradients(result: dict) -> go.Figure:
    """Veit et al. Fig. 6: paths per length, gradient of one path per length, total gradient per length."""
    k = result["k"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "(a) how many paths have length k", "(b) gradient of one path of length k", "(c) total gradient of all length-k paths"))
    fig.add_bar(x=k, y=result["count"] / result["count"].sum() * 100, marker_color="#7f7f7f", row=1, col=1,
                name="share of paths")
    fig.add_scatter(x=k, y=result["per_path"], mode="lines+markers", row=1, col=2, name="one path",
                    line=dict(color=RES_COLOR))
    fig.add_bar(x=k, y=result["share"] * 100, marker_color=RES_COLOR, row=1, col=3, name="share of gradient")
    fig.update_yaxes(title_text="% of all 2ⁿ paths", row=1, col=1)
    fig.update_yaxes(title_text="gradient norm at the input (log)", type="log", row=1, col=2)
    fig.update_yaxes(title_text="% of the total gradient", row=1, col=3)
    for c in (1, 2, 3):
        fig.update_xaxes(title_text="path length k (residual branches passed)", row=1, col=c)
    fig.update_layout(showlegend=False, height=420)
    return fig


def plot_shattered(plain: dict, res: dict, depth: int) -> go.Figure:
    """Gradient of the output w.r.t. a 1-D input along the sweep, and its autocorrelation, plain vs ResNet."""
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.24, subplot_titles=(
        f"plain net, depth {depth}: d output / d input", f"ResNet, depth {depth}: d output / d input",
        f"plain: autocorrelation (lag 1 = {plain['lag1']:.2f})", f"ResNet: autocorrelation (lag 1 = {res['lag1']:.2f})"))
    for col, r, color in ((1, plain, PLAIN_COLOR), (2, res, RES_COLOR)):
        fig.add_scatter(x=r["x"], y=r["grad"], mode="lines", line=dict(color=color, width=1), row=1, col=col)
        fig.add_bar(x=np.arange(len(r["autocorr"])), y=r["autocorr"], marker_color=color, row=2, col=col)
        fig.update_xaxes(title_text="input x", row=1, col=col)
        fig.update_xaxes(title_text="lag (points along the sweep)", row=2, col=col)
        fig.update_yaxes(range=[-1, 1], row=2, col=col)
    fig.update_yaxes(title_text="gradient", row=1, col=1)
    fig.update_yaxes(title_text="correlation", row=2, col=1)
    fig.update_layout(showlegend=False, height=620)
    return fig


def plot_landscape_1d(res: dict, plain: dict) -> go.Figure:
    """Loss along one filter-normalised direction, ResNet vs plain twin."""
    fig = go.Figure()
    for g, label, color in ((res, "ResNet", RES_COLOR), (plain, "plain twin", PLAIN_COLOR)):
        fig.add_scatter(x=g["alphas"], y=g["loss"], mode="lines+markers", name=label, line=dict(color=color))
    fig.update_layout(xaxis_title="step along the direction (α; 0 = trained weights)", yaxis_title="loss (log)",
                      yaxis_type="log", height=380)
    return fig


def _log_loss(grid: dict) -> np.ndarray:
    return np.log10(np.maximum(grid["loss"], 1e-8))


def plot_landscape_contours(res: dict, plain: dict) -> go.Figure:
    """Contour maps of log10 loss on the 2-D slice, side by side on one colour scale."""
    zr, zp = _log_loss(res), _log_loss(plain)
    lo, hi = float(np.nanmin([zr.min(), zp.min()])), float(np.nanmax([zr.max(), zp.max()]))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ResNet", "plain twin"), horizontal_spacing=0.12)
    for col, (g, z) in enumerate(((res, zr), (plain, zp)), start=1):
        fig.add_contour(x=g["alphas"], y=g["betas"], z=z, zmin=lo, zmax=hi, colorscale="Viridis",
                        contours=dict(showlabels=True), showscale=col == 2,
                        colorbar=dict(title="log10 loss"), row=1, col=col)
        fig.add_scatter(x=[0], y=[0], mode="markers", marker=dict(symbol="star", size=12, color="white"),
                        row=1, col=col)
        fig.update_xaxes(title_text="α (direction 1)", row=1, col=col)
        fig.update_yaxes(title_text="β (direction 2)", row=1, col=col, scaleanchor=f"x{'' if col == 1 else col}")
    fig.update_layout(showlegend=False, height=460)
    return fig


def plot_landscape_surfaces(res: dict, plain: dict) -> go.Figure:
    """3-D surfaces of log10 loss on the 2-D slice, ResNet and plain twin."""
    fig = make_subplots(rows=1, cols=2, specs=[[{"type": "surface"}, {"type": "surface"}]],
                        subplot_titles=("ResNet", "plain twin"))
    for col, g in enumerate((res, plain), start=1):
        fig.add_surface(x=g["alphas"], y=g["betas"], z=_log_loss(g), colorscale="Viridis", showscale=False,
                        row=1, col=col)
    axes = dict(xaxis_title="α", yaxis_title="β", zaxis_title="log10 loss",
                camera=dict(eye=dict(x=1.7, y=1.7, z=1.1)))  # far enough that the axes are not clipped
    fig.update_layout(scene=axes, scene2=axes, height=520, margin=dict(l=0, r=0, t=40, b=0))
    return fig
