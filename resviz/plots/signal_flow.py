"""Signal-flow charts: per-layer statistics of a ResNet against its plain twin (FlowResult -> plotly).

Sizes are per-element RMS (the root mean square over the batch and every channel and position), drawn for the
convolutions only: the average pool and the classifier change the number of elements, not the signal's health.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resviz.lessons.signal_flow import FlowResult, Layers, Net
from resviz.plots.style import COLORS, FONT_SIZE, TEXT_COLOR, readable

DASH = {Net.RESNET: "solid", Net.PLAIN: "dash"}  # dashed: still visible where the curves coincide
# The legend at the bottom of the figure, under the axis title: plotly makes room for it however large the text
# (placed in plot units it ran into the axis title at the projector's x1.4)
LEGEND = dict(orientation="h", x=0.5, xanchor="center", yref="container", y=0, yanchor="bottom")
OVER = "over batch × channels × positions"
QUANTITIES = {  # LayerStats attribute -> (title, y-axis label); a title's line break keeps it inside half a page
    "act_rms": ("Forward:<br>size of each conv's output", "RMS of the output"),
    "grad_rms": ("Backward:<br>the gradient at each conv", "RMS of ∂loss/∂output"),
    "weight_grad_rms": ("Backward:<br>each conv's weight gradient", "RMS of ∂loss/∂weight"),
}
ROW_SHIFT = 30  # px: every other stage name one row higher (a row: 14 px x1.4 and its padding), so names never meet


def _stage_label(stage: int) -> str:
    return "stem" if stage == 0 else f"stage {stage}"


def _mark_stages(fig: go.Figure, stages: list[int], row: int | None = None) -> None:
    """A dotted line where a new stage starts, and each stage's name centred over it (x is 1-based)."""
    starts = [i for i, s in enumerate(stages) if i == 0 or s != stages[i - 1]] + [len(stages)]
    axis = "" if not row or row == 1 else str(row)
    for i, (a, b) in enumerate(itertools.pairwise(starts)):
        if a > 0:
            fig.add_vline(x=a + 0.5, line_dash="dot", line_color="#555", row=row, col=1 if row else None)
        fig.add_annotation(x=(a + b + 1) / 2, y=1.0, xref=f"x{axis}", yref=f"y{axis} domain", yanchor="bottom",
                           yshift=ROW_SHIFT * ((i + 1) % 2), text=_stage_label(stages[a]), showarrow=False,
                           font=dict(size=FONT_SIZE, color=TEXT_COLOR))


def _power(t: float) -> str:
    """``2×10⁻⁴``-style label (plotly's own minor log labels are drawn too small to read)."""
    k = math.floor(math.log10(t) + 1e-9)
    m = round(t / 10**k)
    return ("" if m == 1 else f"{m}×") + f"10<sup>{k}</sup>".replace("-", "−")


def _log_ticks(values: np.ndarray) -> dict:
    """Tick positions 1-2-5 per decade (or every n-th decade over wide ranges), all labelled at full size."""
    v = values[np.isfinite(values) & (values > 0)]
    if not v.size:
        return {}
    lo, hi = math.floor(math.log10(v.min())), math.ceil(math.log10(v.max()))
    span = hi - lo  # decades the data spans; one more each side for the axis's padding
    mult = (1, 2, 5) if span <= 3 else (1,)
    step = max(1, math.ceil(span / 5))  # about five labelled decades however wide the range
    ticks = [m * 10.0**k for k in range(hi + 1, lo - 2, -step) for m in mult]
    plain = v.min() >= 1e-2 and v.max() < 1e4  # one style per axis: 0.05 and 2 plainly, else 5×10⁻⁴ and 10⁻³
    return dict(tickvals=ticks, ticktext=[f"{t:g}" if plain else _power(t) for t in ticks])


def _positive(values: np.ndarray) -> list[float | None]:
    """Log axes cannot show 0, negatives, inf or NaN: those points become gaps."""
    return [float(v) if np.isfinite(v) and v > 0 else None for v in values]


def _hover(layers: Layers, idx: list[int]) -> list[str]:
    return [f"{layers.names[i]} ({layers.kind(i)})" for i in idx]


def plot_layer_stat(result: FlowResult, quantity: str, height: int = 460) -> go.Figure:
    """One per-conv statistic for both nets, log scale, depth order, stage boundaries dotted; after training steps
    the curves at initialisation are drawn faintly behind."""
    title, ylabel = QUANTITIES[quantity]
    layers = result[Net.RESNET].stats.layers
    idx = layers.convs
    x = np.arange(1, len(idx) + 1)
    fig = go.Figure()
    for net in Net:
        run = result[net]
        curves = [(run.stats, net.label, 1.0)]
        if result.settings.steps:
            curves = [(run.init_stats, f"{net.label} at initialisation", 0.35),
                      (run.stats, f"{net.label} after {result.settings.steps} steps", 1.0)]
        for stats, label, opacity in curves:
            fig.add_trace(go.Scatter(x=x, y=_positive(getattr(stats, quantity)[idx]), name=label, opacity=opacity,
                                     mode="lines+markers",
                                     line=dict(color=COLORS[net.value], dash=DASH[net], width=2.5),
                                     marker=dict(size=6), text=_hover(layers, idx),
                                     hovertemplate="conv %{x}: %{text}<br>%{y:.3g} (RMS " + OVER + ")<extra>"
                                                   + label + "</extra>"))
    _mark_stages(fig, [layers.stages[i] for i in idx])
    shown = np.concatenate([np.asarray(d.y, dtype=float) for d in fig.data]) if fig.data else np.zeros(0)
    fig.update_yaxes(type="log", title=ylabel, automargin=True, **_log_ticks(shown))
    fig.update_xaxes(title="conv layer (input → output)", automargin=True)
    # the title makes its own room above the stage names (two rows of them)
    fig.update_layout(title=dict(text=title, yref="paper", y=1, yanchor="bottom", pad=dict(b=2 * ROW_SHIFT + 8),
                                 automargin=True),
                      height=height, margin=dict(t=10, b=10, l=10, r=10), legend=LEGEND)
    return readable(fig)


def plot_responses(result: FlowResult) -> go.Figure:
    """The paper's Fig. 7: std of each 3x3 layer's response (after BN, before the addition), in depth order
    (top) and sorted by magnitude (bottom)."""
    layers = result[Net.RESNET].stats.layers
    idx = layers.convs3x3
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.2)
    x = np.arange(1, len(idx) + 1)
    stds = {net: np.asarray(result[net].stats.resp_std)[idx] for net in Net}
    for net, std in stds.items():
        line = dict(color=COLORS[net.value], dash=DASH[net], width=2.5)
        fig.add_trace(go.Scatter(x=x, y=std, name=net.label, mode="lines+markers", line=line, marker=dict(size=5),
                                 text=[layers.names[i] for i in idx],
                                 hovertemplate="%{text}<br>std %{y:.3g}<extra>" + net.label + "</extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=np.sort(std)[::-1], name=net.label, mode="lines", showlegend=False,
                                 line=line), row=2, col=1)
    _mark_stages(fig, [layers.stages[i] for i in idx], row=1)
    finite = np.concatenate(list(stds.values()))
    finite = finite[np.isfinite(finite) & (finite > 0)]
    wide = finite.size and finite.max() / finite.min() > 100  # without BN the stds span decades: log scale
    fig.update_yaxes(title="std of response", type="log" if wide else "linear", rangemode="tozero",
                     **(_log_ticks(finite) if wide else {}))
    fig.update_xaxes(title="3x3 layer (original order)", row=1, col=1)
    fig.update_xaxes(title="3x3 layer (sorted by magnitude)", row=2, col=1)
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    fig.update_layout(title=dict(text="Std of 3x3 layer responses (after BN, before the addition):<br>the paper's "
                                      "Fig. 7", yref="paper", y=1, yanchor="bottom", pad=dict(b=2 * ROW_SHIFT + 8),
                                 automargin=True),
                      height=640, margin=dict(t=10, b=10), legend=LEGEND)
    return readable(fig)


def plot_losses(result: FlowResult) -> go.Figure:
    """Training loss on the batch over the SGD steps, both nets."""
    fig = go.Figure()
    for net in Net:
        losses = result[net].losses
        fig.add_trace(go.Scatter(x=np.arange(1, len(losses) + 1), y=losses, name=net.label, mode="lines+markers",
                                 line=dict(color=COLORS[net.value], dash=DASH[net], width=2.5)))
    fig.update_layout(title="Training loss on this batch, step by step", height=340, margin=dict(t=60, b=50),
                      xaxis_title="SGD step", yaxis_title="cross-entropy loss")
    return readable(fig)
