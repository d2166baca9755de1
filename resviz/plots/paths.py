"""Figure of the paths lesson: Veit et al. 2016, Fig. 6, measured on the model at hand."""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from resviz.lessons.paths import PathGradients
from resviz.plots.style import COLORS, readable


def plot_path_gradients(g: PathGradients) -> go.Figure:
    """(a) paths per length, (b) gradient of one path per length, (c) total gradient per length."""
    one = "(b) one path:<br>mean of all" if g.exact else f"(b) one path:<br>mean of {g.samples} random"
    # Titles on two lines and room between the panels for the next one's tick labels: three panels share one
    # column, and at the projector's x1.4 the one-line titles ran into each other
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.13, subplot_titles=(
        "(a) how many paths<br>have length k", one, "(c) all paths<br>of length k"))
    fig.add_bar(x=g.k, y=g.count / g.count.sum() * 100, marker_color="#7f7f7f", row=1, col=1, name="share of paths")
    fig.add_scatter(x=g.k, y=g.per_path, mode="lines+markers", row=1, col=2, name="one path",
                    line=dict(color=COLORS["resnet"], width=3))
    fig.add_bar(x=g.k, y=g.share * 100, marker_color=COLORS["resnet"], row=1, col=3, name="share of gradient")
    fig.update_yaxes(title_text="% of all 2ⁿ paths", row=1, col=1)
    fig.update_yaxes(title_text="L2 norm at block 1", type="log", row=1, col=2)
    fig.update_yaxes(title_text="% of the gradient", row=1, col=3)
    for c in (1, 2, 3):
        fig.update_xaxes(title_text="path length k", row=1, col=c)
    fig.update_yaxes(automargin=True)
    fig.update_xaxes(automargin=True)
    fig.update_annotations(yshift=10)  # the titles clear of the top tick labels
    fig.update_layout(showlegend=False, height=430, margin=dict(t=90))
    return readable(fig)
