"""Training-race charts: loss and accuracy of every network on shared axes, gradient norms per layer over steps.

Each network has its role's colour on every chart (``resviz.plots.style.COLORS``); the bold loss line is the
lesson's own ``smooth``, the same curve the verdicts read.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from resviz.lessons.training import Ordering, RaceHistory, Role, ordering_marks, smooth
from resviz.plots.style import COLORS as STYLE_COLORS, FONT_SIZE, SEQUENTIAL, TEXT_COLOR, readable

COLORS = {Role.RESNET: STYLE_COLORS["resnet"], Role.PLAIN: STYLE_COLORS["plain"],
          Role.SHALLOW: STYLE_COLORS["shallow_plain"]}
# a mark has the colour of the network it is about: the one that gets ahead, or the one that degrades
MARK_ROLES = {Ordering.SHORTCUTS_HELP: Role.RESNET, Ordering.DEGRADATION: Role.PLAIN,
              Ordering.NO_DEGRADATION: Role.RESNET}
DASHES = {Role.RESNET: "solid", Role.PLAIN: "dash", Role.SHALLOW: "dot"}
LEGEND = dict(orientation="h", x=0.5, xanchor="center", y=-0.42, yanchor="top")  # under the axis: never on the title,
#               and under the axis title at x1.4 on a projector too
HEIGHT = 450  # a 225 px plot, the legend under the axis title even at x1.4
MARGIN = dict(t=95, b=130, l=70, r=20)
MARK_GAP_PX = 30  # between two ordering marks' labels: a line of text at x1.4


def _finite(values) -> list[float | None]:
    return [float(v) if v is not None and np.isfinite(v) else None for v in values]


def _title(text: str, subtitle: str) -> dict:
    """A short title and its subtitle on a line of its own: side by side on a projector, long titles were cut."""
    return dict(text=text, subtitle=dict(text=subtitle, font=dict(size=FONT_SIZE, color=TEXT_COLOR)),
                yref="container", y=1, yanchor="top", pad=dict(t=10))


def _step_axis(fig: go.Figure, history: RaceHistory) -> None:
    """The whole race on the x axis, the same on every chart: a live curve grows towards its end, and the
    ResNet-ahead note (which plotly would otherwise make room for) never stretches one chart's axis."""
    fig.update_xaxes(title="training step", range=[0, 1.02 * max(history.steps, 1)])


def plot_race_loss(history: RaceHistory) -> go.Figure:
    """Training loss per step for every network: faint raw batch losses, bold smoothed trend; a dotted line at each
    step where one of the paper's orderings became clear (and has stayed so), and one at guessing's ln(classes)."""
    fig = go.Figure()
    for name, run in history.runs.items():
        color, dash = COLORS[run.role], DASHES[run.role]
        fig.add_trace(go.Scatter(x=run.step, y=_finite(run.loss), name=f"{name} (each batch)",
                                 line=dict(color=color, width=1), opacity=0.25, showlegend=False,
                                 hovertemplate="step %{x}: loss %{y:.3f}<extra>" + name + "</extra>"))
        fig.add_trace(go.Scatter(x=run.step, y=run.smoothed_loss, name=name,
                                 line=dict(color=color, width=4, dash=dash),
                                 hovertemplate="step %{x}: smoothed loss %{y:.3f}<extra>" + name + "</extra>"))
    if history.classes:  # what a network that guesses evenly pays: the verdicts' "guessing level"
        fig.add_hline(y=math.log(history.classes), line=dict(color="#555555", dash="dot", width=2),
                      annotation_text=f"guessing: ln {history.classes} = {math.log(history.classes):.2f}",
                      annotation_position="top right")
    for i, mark in enumerate(ordering_marks(history)):  # live too: each ordering is marked as it appears
        color = COLORS[MARK_ROLES[mark.ordering]]
        fig.add_vline(x=mark.step, line=dict(color=color, dash="dot", width=2))
        fig.add_annotation(x=mark.step, y=0, yshift=4 + MARK_GAP_PX * i, xref="x", yref="paper", text=mark.text,
                           hovertext=mark.detail, showarrow=False, yanchor="bottom", font=dict(color=color),
                           xanchor="left" if mark.step < history.steps / 2 else "right",  # on the side with room
                           bgcolor="rgba(255,255,255,0.55)")  # the curves show through
    _step_axis(fig, history)
    fig.update_yaxes(title="smoothed loss", rangemode="tozero")  # short: the plot is ~230 px tall at x1.4
    fig.update_layout(title=_title("Training loss", "same start, same batches, same recipe"), height=HEIGHT,
                      legend=LEGEND, margin=MARGIN)
    return readable(fig)


def plot_race_accuracy(history: RaceHistory, chance: float | None = None) -> go.Figure:
    """Accuracy per network: held-out accuracy (bold, dots) and smoothed training-batch accuracy (thin)."""
    fig = go.Figure()
    for name, run in history.runs.items():
        color, dash = COLORS[run.role], DASHES[run.role]
        train = [None if a is None else 100 * a for a in smooth(run.acc)]
        fig.add_trace(go.Scatter(x=run.step, y=train, name=f"{name} training batches", legendgroup=name,
                                 showlegend=False, opacity=0.6, line=dict(color=color, width=1.5, dash=dash),
                                 hovertemplate="step %{x}: training batches %{y:.1f}%<extra>" + name + "</extra>"))
        fig.add_trace(go.Scatter(x=run.test_step, y=[100 * a for a in run.test_acc], name=name, legendgroup=name,
                                 mode="lines+markers", line=dict(color=color, width=4, dash=dash),
                                 marker=dict(size=9), hovertemplate="step %{x}: held-out %{y:.1f}%<extra>" + name +
                                 "</extra>"))
    if chance:
        fig.add_hline(y=100 * chance, line_dash="dot", line_color="#555555", annotation_text="guessing",
                      annotation_position="top right")  # above the line: under it, it met the step ticks at x1.4
    _step_axis(fig, history)
    fig.update_yaxes(title="accuracy (%)", range=[0, 100])
    fig.update_layout(title=_title("Accuracy", "held-out images (bold), training batches (thin)"), height=HEIGHT,
                      legend=LEGEND, margin=MARGIN)
    return readable(fig)


def plot_grad_heatmap(name: str, layers: list[str], steps: list[int], norms: list[list[float] | None],
                      zrange: tuple[float, float] | None = None, max_cols: int = 300,
                      names: bool | None = None) -> go.Figure:
    """Gradient norm of every layer's weights (rows, input at the top) at every step (columns), log colour.

    Long runs show every k-th step (at most ``max_cols`` columns) so live redraws stay light. Layer names are
    written when ``names`` (default: up to 24 layers); heatmaps side by side pass one choice so they line up.
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
        z=z, x=x, y=[f"{i + 1}. {n}" for i, n in enumerate(layers)], colorscale=SEQUENTIAL, zmin=lo, zmax=hi,
        colorbar=dict(title=dict(text="log10 ‖grad‖", side="right"), thickness=12),
        hovertemplate="step %{x}<br>%{y}<br>log10 ‖grad‖ = %{z:.2f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", showticklabels=len(layers) <= 24 if names is None else names)
    fig.update_xaxes(title="training step")
    fig.update_layout(title=_title(name, "gradient norm per layer"), height=420, margin=dict(t=90, b=70, l=10, r=10))
    return readable(fig)


def grad_range(history: RaceHistory) -> tuple[float, float] | None:
    """One log10 colour range for every network's heatmap, so their colours compare."""
    vals = [v for run in history.runs.values() for n in run.grad_norms if n for v in n
            if v is not None and np.isfinite(v) and v > 0]
    if not vals:
        return None
    logs = np.log10(vals)
    return float(np.percentile(logs, 1)), float(np.percentile(logs, 99))


def plot_race_charts(history: RaceHistory, chance: float | None = None) -> list[go.Figure]:
    """Every chart of a race: loss, accuracy, then one gradient heatmap per network (one colour range; layer
    names on all of them or none, so they line up)."""
    zrange, names = grad_range(history), max(len(r.layers) for r in history.runs.values()) <= 24
    return [plot_race_loss(history), plot_race_accuracy(history, chance),
            *(plot_grad_heatmap(r.name, r.layers, r.step, r.grad_norms, zrange, names=names)
              for r in history.runs.values())]
