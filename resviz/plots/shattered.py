"""Figures of the shattered-gradients lesson: the input gradient along a 1-D sweep, and its correlation by depth."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resviz.lessons.shattered import DepthCurve, Sweep
from resviz.plots.style import COLORS, readable


def plot_shattered(plain: Sweep, res: Sweep, depth: int) -> go.Figure:
    """Gradient of the output w.r.t. a 1-D input along the sweep, and its autocorrelation, plain vs ResNet."""
    # Titles on two lines: two panels share the column, and on one line they ran into each other at x1.4
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.3, horizontal_spacing=0.12, subplot_titles=(
        f"plain net, {depth} layers:<br>d output / d x", f"ResNet, {depth} layers:<br>d output / d x",
        f"plain: autocorrelation<br>(lag 1 = {plain.lag1:.2f})",
        f"ResNet: autocorrelation<br>(lag 1 = {res.lag1:.2f})"))
    for col, r, color in ((1, plain, COLORS["plain"]), (2, res, COLORS["resnet"])):
        fig.add_scatter(x=r.x, y=r.grad, mode="lines", line=dict(color=color, width=1.5), row=1, col=col)
        fig.add_bar(x=np.arange(len(r.autocorr)), y=r.autocorr, marker_color=color, row=2, col=col)
        fig.update_xaxes(title_text="input x", row=1, col=col)
        fig.update_xaxes(title_text="lag (points along the sweep)", row=2, col=col)
        fig.update_yaxes(range=[-1, 1], row=2, col=col)
    fig.update_yaxes(title_text="gradient", row=1, col=1)
    fig.update_yaxes(title_text="correlation", row=2, col=1)
    fig.update_annotations(yshift=6)  # the titles clear of the top tick labels
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    fig.update_layout(showlegend=False, height=680, margin=dict(t=80))
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
    if depth is not None:  # its label inside the plot, under the legend
        fig.add_vline(x=depth, line=dict(color="#555555", dash="dot"))
        fig.add_annotation(x=depth, y=1, yref="paper", yanchor="top", xanchor="left", text=f"{depth} layers",
                           showarrow=False)
    # The legend above the plot, where plotly makes room for it however large the text
    fig.update_layout(xaxis_title="depth (hidden layers)", yaxis_title="lag-1 correlation",
                      yaxis_range=[-0.3, 1.05], height=460, margin=dict(t=10),
                      legend=dict(orientation="h", x=0, xanchor="left", y=1.02, yanchor="bottom"))
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return readable(fig)
