"""Figures of the loss-landscape lesson: 1-D and 2-D slices, ResNet and plain twin on one scale."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resviz.lessons.landscape import Grid, PairGrids
from resviz.plots.style import COLORS, FONT_SIZE, SEQUENTIAL, TEXT_COLOR, readable

SPACING = 0.2  # between the two maps: room for the right one's tick labels and axis title at the projector's x1.4


def plot_landscape_1d(g: PairGrids) -> go.Figure:
    """Loss along one filter-normalised direction, ResNet vs plain twin."""
    fig = go.Figure()
    for grid, label, color in ((g.resnet, "ResNet", COLORS["resnet"]), (g.plain, "plain twin", COLORS["plain"])):
        fig.add_scatter(x=grid.alphas, y=grid.loss, mode="lines+markers", name=label,
                        line=dict(color=color, width=3), marker=dict(size=8))
    fig.update_layout(xaxis_title="step along the direction (α; 0 = trained weights)", yaxis_title="loss (log scale)",
                      yaxis=dict(type="log", dtick=1), height=380, margin=dict(t=30))
    return readable(fig)


def _log_loss(grid: Grid) -> np.ndarray:
    return np.log10(np.maximum(grid.loss, 1e-8))


def _shared_range(g: PairGrids) -> tuple[float, float]:
    """One log10-loss range for both nets, so equal heights and colours mean equal losses."""
    zr, zp = _log_loss(g.resnet), _log_loss(g.plain)
    return float(min(np.nanmin(zr), np.nanmin(zp))), float(max(np.nanmax(zr), np.nanmax(zp)))


def plot_landscape_contours(g: PairGrids) -> go.Figure:
    """Contour maps of log10 loss on the 2-D slice, side by side on one colour scale."""
    lo, hi = _shared_range(g)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ResNet", "plain twin"), horizontal_spacing=SPACING)
    for col, grid in enumerate((g.resnet, g.plain), start=1):
        fig.add_contour(x=grid.alphas, y=grid.betas, z=_log_loss(grid), zmin=lo, zmax=hi, colorscale=SEQUENTIAL,
                        contours=dict(showlabels=True, labelfont=dict(size=FONT_SIZE, color="white")),
                        showscale=col == 2, colorbar=dict(title="log10 loss"), row=1, col=col)
        fig.add_scatter(x=[0], y=[0], mode="markers", marker=dict(symbol="star", size=16, color="white",
                                                                   line=dict(color="black", width=1)),
                        row=1, col=col)
        fig.update_xaxes(title_text="α (direction 1)", row=1, col=col)
        fig.update_yaxes(title_text="β (direction 2)", row=1, col=col, scaleanchor=f"x{'' if col == 1 else col}")
    fig.update_layout(showlegend=False, height=480, margin=dict(t=50))
    return readable(fig)


def _inner_ticks(lo: float, hi: float) -> dict:
    """Whole decades of the height axis, none at its bottom corner, where the α and β labels are."""
    ticks = [t for t in range(math.floor(lo), math.ceil(hi) + 1) if lo + 0.15 * (hi - lo) < t <= hi]
    return dict(tickvals=ticks) if ticks else {}


def plot_landscape_surfaces(g: PairGrids) -> go.Figure:
    """3-D surfaces of log10 loss on the 2-D slice, ResNet and plain twin on one height and colour scale."""
    lo, hi = _shared_range(g)
    fig = make_subplots(rows=1, cols=2, specs=[[{"type": "surface"}, {"type": "surface"}]],
                        subplot_titles=("ResNet", "plain twin"))
    for col, grid in enumerate((g.resnet, g.plain), start=1):
        fig.add_surface(x=grid.alphas, y=grid.betas, z=_log_loss(grid), colorscale=SEQUENTIAL, cmin=lo, cmax=hi,
                        showscale=False, row=1, col=col)
    font = dict(size=FONT_SIZE, color=TEXT_COLOR)
    axis = dict(tickfont=font, title_font=font, nticks=4)  # few ticks: at x1.4 plotly's many ran into each other
    scene = dict(xaxis=dict(title="α", **axis), yaxis=dict(title="β", **axis),
                 zaxis=dict(title="log10 loss", range=[lo, hi + 1e-6], **axis, **_inner_ticks(lo, hi)),
                 camera=dict(eye=dict(x=2.1, y=2.1, z=1.3)))  # far enough that the axes are not clipped
    fig.update_layout(scene=scene, scene2=scene, height=540, margin=dict(l=30, r=0, t=50, b=0))
    return readable(fig)


def plot_negative_curvature(g: PairGrids) -> go.Figure:
    """Where each slice curves down (Li et al., Section 6, Fig. 7, for the slice's own 2-D Hessian): the ratio
    |lambda_min / lambda_max| at each inner grid point, 0 (curves up both ways, or flat) to 1, on one colour scale."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ResNet", "plain twin"), horizontal_spacing=SPACING)
    for col, grid in enumerate((g.resnet, g.plain), start=1):
        fig.add_heatmap(x=grid.alphas[1:-1], y=grid.betas[1:-1], z=grid.negative_curvature(), zmin=0, zmax=1,
                        colorscale=SEQUENTIAL, showscale=col == 2, colorbar=dict(title="|λmin/λmax|"),
                        hovertemplate="α %{x:.2f}, β %{y:.2f}: %{z:.2f}<extra></extra>", row=1, col=col)
        fig.update_xaxes(title_text="α (direction 1)", row=1, col=col)
        fig.update_yaxes(title_text="β (direction 2)", row=1, col=col, scaleanchor=f"x{'' if col == 1 else col}")
    fig.update_layout(height=420, margin=dict(t=50))
    return readable(fig)
