"""Signal-flow charts: per-layer statistics of a ResNet against its plain twin (numpy/dicts -> plotly)."""
from __future__ import annotations

import itertools

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

LEGEND = dict(orientation="h", y=-0.2, x=0.5, xanchor="center", yanchor="top")  # below: clear of the stage names
NETS = (("resnet", "ResNet", "#1f77b4"), ("plain", "plain twin", "#d62728"))  # name, label, colour
DASH = {"resnet": "solid", "plain": "dash"}  # dashed: still visible where the curves coincide
QUANTITIES = {  # key in collect_stats' output -> (title, y-axis label)
    "act_norm": ("Forward: activation norm of each layer's output", "‖output‖ per example"),
    "act_std": ("Forward: standard deviation of each layer's output", "std of output"),
    "grad_norm": ("Backward: gradient norm with respect to each layer's output", "‖∂loss/∂output‖"),
    "weight_grad_norm": ("Backward: gradient norm of each layer's weights", "‖∂loss/∂weight‖"),
}


def _stage_label(stage: int, last: int) -> str:
    return "stem" if stage == 0 else ("fc" if stage == last else f"stage {stage}")


def _mark_stages(fig: go.Figure, stages: list[int], last: int, row: int | None = None) -> None:
    """A dotted line where a new stage starts, and each stage's name centred over it (x is 1-based)."""
    starts = [i for i, s in enumerate(stages) if i == 0 or s != stages[i - 1]] + [len(stages)]
    axis = "" if not row or row == 1 else str(row)
    for a, b in itertools.pairwise(starts):
        if a > 0:
            fig.add_vline(x=a + 0.5, line_dash="dot", line_color="grey", row=row, col=1 if row else None)
        fig.add_annotation(x=(a + b + 1) / 2, y=1.0, xref=f"x{axis}", yref=f"y{axis} domain", yanchor="bottom",
                           text=_stage_label(stages[a], last), showarrow=False, font=dict(size=11, color="grey"))


def _positive(values: np.ndarray) -> list[float | None]:
    """Log axes cannot show 0, negatives, inf or NaN: those points become gaps."""
    return [float(v) if np.isfinite(v) and v > 0 else None for v in values]


def plot_layer_stat(result: dict, quantity: str) -> go.Figure:
    """One per-layer statistic for both nets, log scale, layers in depth order, stage boundaries dotted."""
    title, ylabel = QUANTITIES[quantity]
    info = result["resnet"]["layer_info"]
    x = np.arange(1, len(info["names"]) + 1)
    hover = [f"{n} ({k})" for n, k in zip(info["names"], info["kinds"])]
    fig = go.Figure()
    for key, label, color in NETS:
        fig.add_trace(go.Scatter(x=x, y=_positive(result[key][quantity]), name=label, mode="lines+markers",
                                 line=dict(color=color, dash=DASH[key]), marker=dict(size=5), text=hover,
                                 hovertemplate="layer %{x}: %{text}<br>%{y:.3g}<extra>" + label + "</extra>"))
    _mark_stages(fig, info["stages"], max(info["stages"]))
    fig.update_yaxes(type="log", title=ylabel, exponentformat="power")
    fig.update_xaxes(title="layer (depth order: input → output)")
    fig.update_layout(title=dict(text=title), height=420, margin=dict(t=60, b=90), legend=LEGEND)
    return fig


def plot_responses(result: dict) -> go.Figure:
    """The paper's Fig. 7: std of each 3x3 layer's response (after BN, before the addition), in depth order
    (top) and sorted by magnitude (bottom)."""
    info = result["resnet"]["layer_info"]
    idx = [i for i, k in enumerate(info["kinds"]) if k == "conv 3x3"]
    names = [info["names"][i] for i in idx]
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.2)
    x = np.arange(1, len(idx) + 1)
    for key, label, color in NETS:
        std = np.asarray(result[key]["resp_std"])[idx]
        fig.add_trace(go.Scatter(x=x, y=std, name=label, mode="lines+markers", line=dict(color=color, dash=DASH[key]),
                                 marker=dict(size=4), text=names,
                                 hovertemplate="%{text}<br>std %{y:.3g}<extra>" + label + "</extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=np.sort(std)[::-1], name=label, mode="lines", showlegend=False,
                                 line=dict(color=color, dash=DASH[key])), row=2, col=1)
    _mark_stages(fig, [info["stages"][i] for i in idx], max(info["stages"]), row=1)
    finite = np.concatenate([np.asarray(result[k]["resp_std"])[idx] for k, _, _ in NETS])
    finite = finite[np.isfinite(finite) & (finite > 0)]
    wide = finite.size and finite.max() / finite.min() > 100  # without BN the stds span decades: log scale
    fig.update_yaxes(title="std of response", type="log" if wide else "linear", rangemode="tozero")
    fig.update_xaxes(title="3x3 layer (original order)", row=1, col=1)
    fig.update_xaxes(title="3x3 layer (sorted by magnitude)", row=2, col=1)
    fig.update_layout(title=dict(text="Std of 3x3 layer responses (after BN, before the addition): the paper's "
                                      "Fig. 7", y=0.98),
                      height=580, margin=dict(t=80, b=90), legend=LEGEND)
    return fig


def plot_losses(result: dict) -> go.Figure:
    """Training loss on the batch over the SGD steps, both nets."""
    fig = go.Figure()
    for key, label, color in NETS:
        losses = result["losses"].get(key, [])
        fig.add_trace(go.Scatter(x=np.arange(1, len(losses) + 1), y=losses, name=label, mode="lines+markers",
                                 line=dict(color=color)))
    fig.update_layout(title="Training loss on this batch, step by step", height=300, margin=dict(t=50, b=40),
                      xaxis_title="SGD step", yaxis_title="cross-entropy loss")
    return fig
