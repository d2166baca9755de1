"""Figure of the lesion study: test accuracy with each block deleted, ResNet against its plain twin."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from resviz import pair
from resviz.lessons.lesion import LesionComparison
from resviz.plots.style import COLORS, readable

DOWN_SHADE = "rgba(120,120,120,0.18)"
HEADROOM = 118  # % at the top of the y axis: room for the labels above the 100% line


def plot_lesion(c: LesionComparison) -> go.Figure:
    """Test accuracy with each block deleted, ResNet vs plain twin, each with its 95% interval (bars, and a band
    around the intact line); downsampling blocks shaded, chance dotted. Legend names are short (the intervals are
    said on hover and under the chart), so that the legend takes two rows, not six, on a projector."""
    names = list(c.resnet.names)
    fig = go.Figure()
    for i, down in enumerate(c.resnet.downsampling):
        if down:
            fig.add_vrect(x0=i - 0.5, x1=i + 0.5, fillcolor=DOWN_SHADE, line_width=0,
                          annotation_text="downsampling", annotation_position="top left")  # in the headroom
    for r, label, color in ((c.resnet, "ResNet", COLORS["resnet"]), (c.plain, "plain twin", COLORS["plain"])):
        acc = np.where(r.possible, r.accuracy, np.nan)
        bounds = [pair.accuracy_interval(a, r.images) if a == a else (a, a) for a in acc]  # NaN: no bar
        fig.add_scatter(x=names, y=acc * 100, mode="lines+markers", name=f"{label}: one block deleted",
                        line=dict(color=color, width=3), marker=dict(size=9), connectgaps=False,
                        error_y=dict(type="data", array=[100 * (hi - a) for (_, hi), a in zip(bounds, acc)],
                                     arrayminus=[100 * (a - lo) for (lo, _), a in zip(bounds, acc)], color=color,
                                     thickness=1.5))
        lo, hi = pair.accuracy_interval(r.intact, r.images)
        fig.add_hrect(y0=lo * 100, y1=hi * 100, fillcolor=color, opacity=0.08, line_width=0)
        fig.add_scatter(x=names, y=[r.intact * 100] * len(names), mode="lines", line=dict(color=color, dash="dash"),
                        name=f"{label} intact: {r.intact:.1%}", hovertemplate=(
                            f"{label}, nothing deleted: {r.intact:.1%} (band: 95% interval, {r.images} images)"
                            "<extra></extra>"))
    impossible = [n for n, ok in zip(c.plain.names, c.plain.possible) if not ok]
    if impossible:
        fig.add_scatter(x=impossible, y=[3] * len(impossible), mode="markers", name="plain: cannot delete (✕)",
                        marker=dict(symbol="x", size=14, color=COLORS["plain"]))
    fig.add_scatter(x=names, y=[c.chance * 100] * len(names), mode="lines", line=dict(color="#555555", dash="dot"),
                    name=f"guessing ({c.chance:.0%})")
    # Above 100% a strip of headroom holds the "downsampling" labels clear of the intact lines; the legend sits
    # above the plot, where plotly makes room for it however large the text (under the axis it ran into the
    # tick labels at the projector's x1.4)
    fig.update_layout(xaxis_title="deleted block", yaxis_title="test accuracy (%)", height=520,
                      yaxis=dict(range=[0, HEADROOM], tickvals=list(range(0, 101, 20))),
                      legend=dict(orientation="h", x=0, xanchor="left", y=1.02, yanchor="bottom"),
                      margin=dict(t=10, b=10))
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return readable(fig)
