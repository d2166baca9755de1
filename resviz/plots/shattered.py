"""Figures of the shattered-gradients lesson: the input gradient along a 1-D sweep, and its correlation by depth."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resviz.lessons.shattered import DepthCurve, Sweep
from resviz.plots.style import COLORS, readable


def plot_shattered(plain: Sweep, res: Sweep, depth: int) -> go.Figure:
    """Gradient of the output w.r.t. a 1-D input along the sweep, and its autocorrelation, plain vs ResNet."""
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.24, horizontal_spacing=0.1, subplot_titles=(
        f"plain net, {depth} layers: d output / d x", f"ResNet, {depth} layers: d output / d x",
        f"plain: autocorrelation (lag 1 = {plain.lag1:.2f})", f"ResNet: autocorrelation (lag 1 = {res.lag1:.2f})"))
    for col, r, color in ((1, plain, COLORS["plain"]), (2, res, COLORS["resnet"])):
        fig.add_scatter(x=r.x, y=r.grad, mode="lines", line=dict(color=color, width=1.5), row=1, col=col)
        fig.add_bar(x=np.arange(len(r.autocorr)), y=r.autocorr, marker_color=color, row=2, col=col)
        fig.update_xaxes(title_text="input x", row=1, col=col)
        fig.update_xaxes(title_text="lag (points along the sweep)", row=2, col=col)
        fig.update_yaxes(range=[-1, 1], row=2, col=col)
    fig.update_yaxes(title_text="gradient", row=1, col=1)
    fig.update_yaxes(title_text="correlation", row=2, col=1)
    fig.update_layout(showlegend=False, height=620, margin=dict(t=50))
    return readable(fig)


def plot_depth_curve(curve: DepthCurve, depth: int | None = None) -> go.Figure:
    """Lag-1 correlation of neighbouring gradients against depth, both nets: the mean over the initialisations and,
    when there are several, their band (lowest to highest); the chosen depth marked."""
    fig = go.Figure()
    x, several = list(curve.depths), len(curve.draws(True)) > 1
    for resnet, label, color in ((True, "ResNet", COLORS["resnet"]), (False, "plain net", COLORS["plain"])):
        if several:
            lo, hi = curve.band(resnet)
            fig.add_scatter(x=x + x[::-1], y=list(hi) + list(lo[::-1]), fill="toself", fillcolor=color, opacity=0.2,
                            line=dict(width=0), hoverinfo="skip", name=f"{label}: lowest to highest draw")
        mean = f"{label}, mean of {len(curve.seeds)}" if several else label
        fig.add_scatter(x=x, y=curve.resnet if resnet else curve.plain, mode="lines+markers", name=mean,
                        line=dict(color=color, width=3), marker=dict(size=9))
    if depth is not None:
        fig.add_vline(x=depth, line=dict(color="#555555", dash="dot"), annotation_text=f"{depth} layers",
                      annotation_position="top right")
    fig.update_layout(xaxis_title="depth (hidden layers)", yaxis_title="lag-1 correlation",
                      yaxis_range=[-0.3, 1.05], height=380, margin=dict(t=30),
                      legend=dict(orientation="h", y=1.12, x=0))
    return readable(fig)
