"""Figures for the feature-maps page: preprocessing steps, channel grids, block norms, top-5, heat-map overlays."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

VIEW_TITLES = {"fx": "main path F(x)", "x": "shortcut x", "out": "output relu(F(x) + x)"}
PLAIN_TITLES = {"fx": "main path F(x)", "out": "output relu(F(x)) (no shortcut)"}


def _hide_axes(fig: go.Figure) -> None:
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed")


def plot_preprocessing(steps: dict) -> go.Figure:
    """original -> resized -> center-cropped -> normalized, one small panel each (normalized: per channel)."""
    pre, norm = steps["pre"], steps["normalized"]
    w, h = steps["original_size"]
    rh, rw = steps["resized"].shape[:2]
    titles = [f"original {w}x{h}", f"resized {rw}x{rh}", f"center crop {pre.crop}x{pre.crop}"] + [
        f"{c}: (x-{m:.3f})/{s:.3f}" for c, m, s in zip("RGB", pre.mean, pre.std)]
    fig = make_subplots(rows=1, cols=6, subplot_titles=titles, horizontal_spacing=0.02)
    for i, key in enumerate(("original", "resized", "cropped")):
        fig.add_trace(go.Image(z=steps[key], hoverinfo="skip"), 1, i + 1)
    lim = float(np.abs(norm).max()) or 1.0
    for c in range(3):
        fig.add_trace(go.Heatmap(z=norm[c], colorscale="RdBu_r", zmin=-lim, zmax=lim, showscale=c == 2,
                                 colorbar=dict(len=0.9, thickness=10),
                                 hovertemplate="normalized %{z:.2f}<extra></extra>"), 1, 4 + c)
    _hide_axes(fig)
    fig.update_yaxes(scaleanchor="x")
    for i in range(2, 7):
        fig.update_yaxes(scaleanchor=f"x{i}", row=1, col=i)
    fig.update_layout(height=240, margin=dict(l=0, r=0, t=40, b=0))
    fig.update_annotations(font_size=11)
    return fig


def plot_feature_grid(maps: np.ndarray, channels, title: str, zmax: np.ndarray | None = None,
                      cols: int | None = None) -> go.Figure:
    """One heat map per channel (k, H, W); red positive, blue negative; hover: channel, value, its range."""
    k = len(maps)
    cols = cols or max(1, math.ceil(math.sqrt(k)))
    rows = max(1, math.ceil(k / cols))
    zmax = np.abs(maps).reshape(k, -1).max(1) if zmax is None else zmax
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"ch {c}" for c in channels],
                        horizontal_spacing=0.02, vertical_spacing=0.06 if rows > 1 else 0.0)
    for i, (m, c) in enumerate(zip(maps, channels)):
        lim = float(zmax[i]) or 1.0
        fig.add_trace(go.Heatmap(
            z=m, colorscale="RdBu_r", zmin=-lim, zmax=lim, showscale=False,
            hovertemplate=(f"channel {c}<br>value %{{z:.3f}}<br>range [{m.min():.3f}, {m.max():.3f}]"
                           "<br>row %{y}, col %{x}<extra></extra>")), i // cols + 1, i % cols + 1)
    _hide_axes(fig)
    fig.update_layout(title=dict(text=title, x=0.5, xanchor="center"), height=70 + 110 * rows,
                      margin=dict(l=0, r=0, t=60, b=0))
    fig.update_annotations(font_size=10)
    return fig


def plot_block_views(result: dict, k: int) -> list[go.Figure]:
    """F(x), the shortcut x and relu(F(x) + x) for the k most active channels; one color scale per channel."""
    titles = VIEW_TITLES if result["residual"] else PLAIN_TITLES
    views = [v for v in titles if result.get(v) is not None]
    k = min(k, len(result["channels"]))
    zmax = np.max([np.abs(result[v][:k]).reshape(k, -1).max(1) for v in views], axis=0)
    return [plot_feature_grid(result[v][:k], result["channels"][:k], f"{result['block']}: {titles[v]}", zmax)
            for v in views]


def plot_block_norms(norms: list[dict], highlight: str | None = None) -> go.Figure:
    """RMS size of F(x), of the shortcut x and of the block output, block by block."""
    names = [n["name"] for n in norms]
    fig = go.Figure()
    for key, label in (("x", "shortcut x"), ("fx", "main path F(x)"), ("out", "output")):
        if any(key in n for n in norms):
            fig.add_trace(go.Scatter(x=names, y=[n.get(key) for n in norms], mode="lines+markers", name=label,
                                     hovertemplate=f"%{{x}}<br>{label}: RMS %{{y:.3f}}<extra></extra>"))
    if highlight in names:
        fig.add_vline(x=names.index(highlight), line_dash="dot", line_color="grey")
    fig.update_layout(height=320, margin=dict(l=0, r=0, t=70, b=0), title="Size of each part, block by block",
                      xaxis_title="block", yaxis_title="RMS (root mean square)",
                      legend=dict(orientation="h", y=1.02, yanchor="bottom"))
    return fig


def plot_top_k(top: list[dict], title: str = "Top-5 classes") -> go.Figure:
    """Horizontal bars: class name and probability, most probable on top."""
    top = top[::-1]
    fig = go.Figure(go.Bar(x=[t["prob"] for t in top], y=[t["name"] if t["name"] == f"class {t['index']}" else f"{t['name']} ({t['index']})" for t in top],
                           orientation="h", text=[f"{t['prob']:.1%}" for t in top], textposition="auto",
                           hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_layout(title=title, height=60 + 36 * len(top), margin=dict(l=0, r=0, t=40, b=0),
                      xaxis=dict(title="probability", range=[0, 1], tickformat=".0%"))
    return fig


def plot_overlay(image: np.ndarray, heat: np.ndarray, title: str, signed: bool = False) -> go.Figure:
    """A heat map (H, W) laid half-transparent over the image (H, W, 3) it explains."""
    lim = float(np.abs(heat).max()) or 1.0
    scale = dict(colorscale="RdBu_r", zmin=-lim, zmax=lim) if signed else dict(colorscale="Jet", zmin=0, zmax=lim)
    fig = go.Figure(go.Image(z=image, hoverinfo="skip"))
    fig.add_trace(go.Heatmap(z=heat, opacity=0.45, colorbar=dict(thickness=10), **scale,
                             hovertemplate="row %{y}, col %{x}<br>%{z:.3g}<extra></extra>"))
    _hide_axes(fig)
    fig.update_yaxes(scaleanchor="x")
    fig.update_layout(title=title, height=330, margin=dict(l=0, r=0, t=40, b=0))
    return fig
