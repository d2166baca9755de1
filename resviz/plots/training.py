"""Training-race charts: loss and accuracy of every network on shared axes, gradient norms per layer over steps."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from resviz.lessons.training import RaceHistory, Role, smooth

COLORS = {Role.RESNET: "#1f77b4", Role.PLAIN: "#d62728", Role.SHALLOW: "#ff7f0e"}  # one colour per role, every chart
DASHES = {Role.RESNET: "solid", Role.PLAIN: "dash", Role.SHALLOW: "dot"}
LEGEND = dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom")


def _finite(values) -> list[float | None]:
    return [float(v) if v is not None and np.isfinite(v) else None for v in values]


def plot_race_loss(history: RaceHistory) -> go.Figure:
    """Training loss per step for every network: faint raw batch losses, bold smoothed trend."""
    fig = go.Figure()
    for name, run in history.runs.items():
        color, dash = COLORS[run.role], DASHES[run.role]
        fig.add_trace(go.Scatter(x=run.step, y=_finite(run.loss), name=f"{name} (each batch)",
                                 line=dict(color=color, width=1), opacity=0.25, showlegend=False,
                                 hovertemplate="step %{x}: loss %{y:.3f}<extra>" + name + "</extra>"))
        fig.add_trace(go.Scatter(x=run.step, y=run.smoothed_loss, name=name,
                                 line=dict(color=color, width=3, dash=dash),
                                 hovertemplate="step %{x}: smoothed loss %{y:.3f}<extra>" + name + "</extra>"))
    fig.update_xaxes(title="training step", rangemode="tozero")
    fig.update_yaxes(title="cross-entropy loss (lower is better)", rangemode="tozero")
    fig.update_layout(title="Training loss: same batches, same optimizer", height=380, legend=LEGEND,
                      margin=dict(t=70, b=40))
    return fig


def plot_race_accuracy(history: RaceHistory, chance: float | None = None) -> go.Figure:
    """Accuracy per network: smoothed training-batch accuracy (thin) and test accuracy (markers)."""
    fig = go.Figure()
    for name, run in history.runs.items():
        color, dash = COLORS[run.role], DASHES[run.role]
        train = [None if a is None else 100 * a for a in smooth(run.acc)]
        fig.add_trace(go.Scatter(x=run.step, y=train, name=f"{name} train", line=dict(color=color, width=1.5,
                                 dash=dash), hovertemplate="step %{x}: train %{y:.1f}%<extra>" + name + "</extra>"))
        fig.add_trace(go.Scatter(x=run.test_step, y=[100 * a for a in run.test_acc], name=f"{name} test",
                                 mode="lines+markers", line=dict(color=color, width=3, dash=dash),
                                 marker=dict(size=8), hovertemplate="step %{x}: test %{y:.1f}%<extra>" + name +
                                 "</extra>"))
    if chance:
        fig.add_hline(y=100 * chance, line_dash="dot", line_color="grey", annotation_text="chance",
                      annotation_position="bottom right")
    fig.update_xaxes(title="training step", rangemode="tozero")
    fig.update_yaxes(title="accuracy (%)", range=[0, 100])
    fig.update_layout(title="Accuracy: training batches (smoothed) and held-out test images", height=380,
                      legend=LEGEND, margin=dict(t=70, b=40))
    return fig


def plot_grad_heatmap(name: str, layers: list[str], steps: list[int], norms: list[list[float] | None],
                      zrange: tuple[float, float] | None = None, max_cols: int = 300) -> go.Figure:
    """Gradient norm of every layer's weights (rows, input at the top) at every step (columns), log colour.

    Long runs show every k-th step (at most ``max_cols`` columns) so live redraws stay light.
    """
    stride = max(1, -(-len(norms) // max_cols))
    steps, norms = steps[::stride], norms[::stride]
    rows = [n for n in norms if n is not None]
    z = np.full((len(layers), len(rows)), np.nan)
    if rows:
        arr = np.asarray(rows, dtype=float).T  # (layers, steps)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(np.isfinite(arr) & (arr > 0), np.log10(arr), np.nan)
    x = [s for s, n in zip(steps, norms) if n is not None]
    lo, hi = zrange if zrange else (None, None)
    fig = go.Figure(go.Heatmap(
        z=z, x=x, y=[f"{i + 1}. {n}" for i, n in enumerate(layers)], colorscale="Viridis", zmin=lo, zmax=hi,
        colorbar=dict(title="log10 ‖grad‖", thickness=12),
        hovertemplate="step %{x}<br>%{y}<br>log10 ‖grad‖ = %{z:.2f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="layer (input at top)", showticklabels=len(layers) <= 24)
    fig.update_xaxes(title="training step")
    fig.update_layout(title=f"{name}: gradient norm per layer", height=360, margin=dict(t=50, b=40, l=10, r=10))
    return fig


def grad_range(history: RaceHistory) -> tuple[float, float] | None:
    """One log10 colour range for every network's heatmap, so their colours compare."""
    vals = [v for run in history.runs.values() for n in run.grad_norms if n for v in n
            if v is not None and np.isfinite(v) and v > 0]
    if not vals:
        return None
    logs = np.log10(vals)
    return float(np.percentile(logs, 1)), float(np.percentile(logs, 99))
