"""Figure of the lesion study: test accuracy with each block deleted, ResNet against its plain twin."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from resviz.lessons.lesion import LesionComparison
from resviz.plots.style import COLORS, readable

DOWN_SHADE = "rgba(120,120,120,0.18)"


def plot_lesion(c: LesionComparison) -> go.Figure:
    """Test accuracy with each block deleted, ResNet vs plain twin; downsampling blocks shaded, chance dotted."""
    names = list(c.resnet.names)
    fig = go.Figure()
    for i, down in enumerate(c.resnet.downsampling):
        if down:
            fig.add_vrect(x0=i - 0.5, x1=i + 0.5, fillcolor=DOWN_SHADE, line_width=0,
                          annotation_text="downsampling", annotation_position="top left")
    for r, label, color in ((c.resnet, "ResNet", COLORS["resnet"]), (c.plain, "plain twin", COLORS["plain"])):
        acc = np.where(r.possible, r.accuracy, np.nan) * 100
        fig.add_scatter(x=names, y=acc, mode="lines+markers", name=f"{label}: one block deleted",
                        line=dict(color=color, width=3), marker=dict(size=9), connectgaps=False)
        fig.add_scatter(x=names, y=[r.intact * 100] * len(names), mode="lines", line=dict(color=color, dash="dash"),
                        name=f"{label}, nothing deleted: {r.intact:.1%}")
    impossible = [n for n, ok in zip(c.plain.names, c.plain.possible) if not ok]
    if impossible:
        fig.add_scatter(x=impossible, y=[3] * len(impossible), mode="markers", name="plain: cannot delete (✕)",
                        marker=dict(symbol="x", size=14, color=COLORS["plain"]))
    fig.add_scatter(x=names, y=[c.chance * 100] * len(names), mode="lines", line=dict(color="#555555", dash="dot"),
                    name=f"guessing ({c.chance:.0%})")
    fig.update_layout(xaxis_title="deleted block", yaxis_title="test accuracy (%)", yaxis_range=[0, 105],
                      legend=dict(orientation="h", y=-0.25), height=500, margin=dict(t=30))
    return readable(fig)
