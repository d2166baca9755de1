"""Figures for the feature-maps page: preprocessing steps, channel grids, block norms, top-5, heat-map overlays."""
from __future__ import annotations

import math
import textwrap

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resviz.inputs import text
from resviz.lessons.feature_maps import top_k
from resviz.plots import style
from resviz.plots.projector import SCALE

VIEW_TITLES = {"fx": "main path F(x)", "x": "shortcut x", "out": "output relu(F(x) + x)"}  # the heading names the block
PLAIN_TITLES = {"fx": "main path F(x)", "out": "output relu(F(x))"}
PART_COLORS = {"x": "#7f7f7f", "fx": "#9467bd", "out": "#2ca02c"}  # parts of a block, not networks (style.COLORS)

# Room for text is made for the Projector toggle's size (text x SCALE), so no text is cut or overlaps there.
COLUMN_PX = 300  # the narrowest chart on the page: one of three columns on a 1400x900 projector screen
CHAR_EM = 0.5  # a character is at most about half its font size wide on average (the app's sans-serif font: ~0.45)
LINE_EM = 1.3  # a line of text is about 1.3 times its font size tall
PAD_PX = 8  # between the top of the chart and its title
SHIFT_EM = 0.7  # plotly draws a title of several lines 0.7 em above its anchor (measured in Chromium)
MAX_GAP = 0.6  # channel labels only while the gaps that hold them stay under 0.6 of a tile
LABEL_CHARS = 24  # of a class name beside its top-5 bar (a third of the screen; hover gives the whole name)


def line_px(font_px: float) -> float:
    """Height of one line of ``font_px`` text at projector scale."""
    return LINE_EM * font_px * SCALE


def wrap_title(text: str, width_px: float = COLUMN_PX) -> list[str]:
    """A title cut into lines (at spaces) that fit ``width_px`` at projector scale."""
    chars = max(8, int(width_px / (CHAR_EM * style.TITLE_SIZE * SCALE)))
    return textwrap.wrap(text, chars, break_long_words=False) or [""]


def _titled(fig: go.Figure, title: str, below_px: float = 0, bottom: int = 0) -> go.Figure:
    """``title`` wrapped to the narrowest column, at the top of the chart, with a top margin that holds it (and
    ``below_px`` more for text between the title and the plot) at projector scale."""
    lines = wrap_title(title)
    pad = PAD_PX + (SHIFT_EM * style.TITLE_SIZE * SCALE if len(lines) > 1 else 0)
    top = pad + len(lines) * line_px(style.TITLE_SIZE) + below_px
    fig.update_layout(title=dict(text="<br>".join(lines), x=0.5, xanchor="center", yref="container", y=1,
                                 yanchor="top", pad=dict(t=round(pad))),
                      margin=dict(l=0, r=0, t=math.ceil(top), b=bottom))
    return style.readable(fig)


def _hide_axes(fig: go.Figure) -> None:
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed")


def plot_preprocessing(steps: dict) -> go.Figure:
    """original -> resized -> center-cropped -> normalized, one small panel each (normalized: per channel)."""
    pre, norm = steps["pre"], steps["normalized"]
    w, h = steps["original_size"]
    rh, rw = steps["resized"].shape[:2]
    stages = [("original", f"{w}x{h}"), ("resized", f"{rw}x{rh}"), ("center crop", f"{pre.crop}x{pre.crop}")]
    titles = [f"{a}<br>{b}" for a, b in stages] + [  # two short lines: six titles fit one row on a projector
        f"{c}: (x-{m:.3f})<br>/ {s:.3f}" for c, m, s in zip("RGB", pre.mean, pre.std)]
    fig = make_subplots(rows=1, cols=6, subplot_titles=titles, horizontal_spacing=0.02)
    for i, (key, (stage, size)) in enumerate(zip(("original", "resized", "cropped"), stages)):
        fig.add_trace(go.Image(z=steps[key], hovertemplate=f"{stage} {size}<br>row %{{y}}, column %{{x}}"
                                                           "<extra></extra>"), 1, i + 1)
    lim = float(np.abs(norm).max()) or 1.0
    for c in range(3):
        fig.add_trace(go.Heatmap(z=norm[c], colorscale=style.DIVERGING, zmin=-lim, zmax=lim, showscale=c == 2,
                                 colorbar=dict(len=0.9, thickness=10),
                                 hovertemplate="normalized %{z:.2f}<extra></extra>"), 1, 4 + c)
    _hide_axes(fig)
    fig.update_yaxes(scaleanchor="x")
    for i in range(2, 7):
        fig.update_yaxes(scaleanchor=f"x{i}", row=1, col=i)
    fig = style.readable(fig)
    subtitle_px = max(a.font.size for a in fig.layout.annotations)
    return fig.update_layout(height=280, margin=dict(l=0, r=0, t=math.ceil(PAD_PX + 2 * line_px(subtitle_px)), b=0))


def plot_feature_grid(maps: np.ndarray, channels, title: str, zmax: np.ndarray | None = None,
                      cols: int | None = None, height: int | None = None) -> go.Figure:
    """The k channel maps (k, H, W) tiled into ONE heat map (one trace draws fast); red positive, blue negative,
    each channel on its own colour scale (divided by ``zmax[i]``); hover: channel, value, its range."""
    k, h, w = maps.shape
    cols = cols or max(1, math.ceil(math.sqrt(k)))
    rows = max(1, math.ceil(k / cols))
    height = height or 70 + 110 * rows
    zmax = np.abs(maps).reshape(k, -1).max(1) if zmax is None else zmax
    label_px = line_px(style.FONT_SIZE)
    plot_px = height - PAD_PX - len(wrap_title(title)) * line_px(style.TITLE_SIZE) - label_px  # about: the margin
    gap = label_gap(rows, cols, h, w, plot_px, label_px)
    labelled = gap is not None  # many small tiles: no room for labels; hover still names each channel
    gap = gap or max(1, h // 8)
    shape = (rows * (h + gap) - gap, cols * (w + gap) - gap)
    z = np.full(shape, np.nan)
    info = np.full((*shape, 4), np.nan)  # channel, value, channel min, channel max
    labels = []
    for i, (m, c) in enumerate(zip(maps, channels)):
        y0, x0 = (i // cols) * (h + gap), (i % cols) * (w + gap)
        z[y0:y0 + h, x0:x0 + w] = m / (float(zmax[i]) or 1.0)
        info[y0:y0 + h, x0:x0 + w] = np.stack(np.broadcast_arrays(c, m, m.min(), m.max()), -1)
        if labelled:
            labels.append(dict(x=x0 + (w - 1) / 2, y=y0 - 0.5, text=f"ch {c}", showarrow=False, yanchor="bottom",
                               font=dict(size=style.FONT_SIZE)))
    fig = go.Figure(go.Heatmap(
        z=z, customdata=info, colorscale=style.DIVERGING, zmin=-1, zmax=1, showscale=False, hoverongaps=False,
        hovertemplate=("channel %{customdata[0]:.0f}<br>value %{customdata[1]:.3f}<br>"
                       "range [%{customdata[2]:.3f}, %{customdata[3]:.3f}]<extra></extra>")))
    _hide_axes(fig)
    fig.update_yaxes(scaleanchor="x")
    fig.update_layout(height=height, annotations=labels, plot_bgcolor="white")
    return _titled(fig, title, below_px=label_px if labelled else 0)  # the first row's labels sit above the plot


def label_gap(rows: int, cols: int, h: int, w: int, plot_px: float, label_px: float) -> int | None:
    """The gap between tiles (in map pixels) that holds a ``label_px`` tall label at the chart's drawn scale (the
    plot fills ``plot_px`` high and at most ``COLUMN_PX`` wide); None when the gaps would crowd out the maps."""
    for gap in range(1, math.floor(MAX_GAP * h) + 1):
        px_per_unit = min(plot_px / (rows * (h + gap) - gap), COLUMN_PX / (cols * (w + gap) - gap))
        if gap * px_per_unit >= label_px:
            return gap
    return None


def plot_block_views(result, k: int, height: int | None = None) -> list[go.Figure]:
    """F(x), the shortcut x and relu(F(x) + x) of a ``feature_maps.Capture`` for the k most active channels;
    one colour scale per channel, shared by its views."""
    titles = VIEW_TITLES if result.residual else {v: f"plain twin, {result.block}: {t}" for v, t in
                                                   PLAIN_TITLES.items()}
    views = {v: getattr(result, v) for v in titles if getattr(result, v) is not None}
    k = min(k, len(result.channels))
    zmax = np.max([np.abs(m[:k]).reshape(k, -1).max(1) for m in views.values()], axis=0)
    return [plot_feature_grid(m[:k], result.channels[:k], titles[v], zmax, height=height) for v, m in views.items()]


def plot_block_norms(norms: list, highlight: str | None = None) -> go.Figure:
    """RMS size of F(x), of the shortcut x and of the block output, block by block (``feature_maps.BlockNorms``)."""
    names = [n.name for n in norms]
    fig = go.Figure()
    for key, label in (("x", "shortcut x"), ("fx", "main path F(x)"), ("out", "output")):
        if any(getattr(n, key) is not None for n in norms):
            fig.add_trace(go.Scatter(x=names, y=[getattr(n, key) for n in norms], mode="lines+markers", name=label,
                                     line=dict(color=PART_COLORS[key], width=3, dash="dash" if key == "x" else "solid"),
                                     hovertemplate=f"%{{x}}<br>{label}: RMS %{{y:.3f}}<extra></extra>"))
    if highlight in names:
        fig.add_vline(x=names.index(highlight), line_dash="dot", line_color="grey")
    fig.update_layout(height=420, yaxis_title="RMS over all elements",  # the legend under the plot, off the title
                      legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0))
    return _titled(fig, "Size of each part, block by block", bottom=90)


def plot_top_k(top: list[dict], title: str = "Top-5 classes", color: str = style.COLORS["resnet"]) -> go.Figure:
    """Horizontal bars: class name (maybe a student's folder name: plain text) and probability, most likely on top."""
    top = top[::-1]
    index = ["" if t["name"] == f"class {t['index']}" else f" ({t['index']})" for t in top]  # unique labels
    labels = [text.plotly(t["name"], LABEL_CHARS) + i for t, i in zip(top, index)]
    fig = go.Figure(go.Bar(x=[t["prob"] for t in top], y=labels, orientation="h", marker_color=color,
                           text=[f"{t['prob']:.1%}" for t in top], textposition="auto",
                           customdata=[text.plotly(t["name"]) + i for t, i in zip(top, index)],
                           hovertemplate="%{customdata}: %{x:.2%}<extra></extra>"))
    fig.update_layout(height=110 + 40 * len(top), xaxis=dict(title="probability", range=[0, 1], tickformat=".0%"))
    return _titled(fig, title)


def plot_prediction(capture, weights) -> go.Figure:
    """A ``feature_maps.Capture``'s five most probable classes, named as its ``LoadedWeights`` name them, in its
    network's colour; the title says so when the weights are untrained."""
    title = "Top-5 classes" + (" of an untrained network" if weights.untrained else "")
    return plot_top_k(top_k(capture.probs, weights.class_names), title,
                      style.COLORS["resnet" if capture.residual else "plain"])


def plot_grad_cam(image: np.ndarray, capture, weights) -> go.Figure:
    """A ``feature_maps.Capture``'s Grad-CAM over the picture, titled with its block and the class it explains (as
    its ``LoadedWeights`` name it)."""
    whose = "" if capture.residual else "Plain twin: "
    title = f"{whose}Grad-CAM at {capture.cam_block}: '{text.plotly(weights.class_name(capture.target))}'"
    return plot_overlay(image, capture.cam, title)


def plot_attribution(image: np.ndarray, a) -> go.Figure:
    """A ``feature_maps.Heat`` (signed) over the picture it explains, with its title."""
    return plot_overlay(image, a.heat, a.title, signed=True)


def plot_overlay(image: np.ndarray, heat: np.ndarray, title: str, signed: bool = False) -> go.Figure:
    """A heat map (H, W) over the image (H, W, 3) it explains: the diverging map for signed values, the sequential
    one for magnitudes, transparent near zero so the photo shows through."""
    lim = float(np.abs(heat).max()) or 1.0
    fig = go.Figure(go.Image(z=image, hoverinfo="skip"))
    fig.add_trace(go.Heatmap(z=heat, colorscale=style.overlay_scale(signed), zmin=-lim if signed else 0, zmax=lim,
                             colorbar=dict(thickness=14),
                             hovertemplate="row %{y}, col %{x}<br>%{z:.3g}<extra></extra>"))
    _hide_axes(fig)
    fig.update_yaxes(scaleanchor="x")
    fig.update_layout(height=340)
    return _titled(fig, title)
