"""One visual language for every chart: a colour per network, one sequential and one diverging colour map,
text readable from the back of a classroom (at least 14 px, dark)."""
from __future__ import annotations

import plotly.colors
import plotly.graph_objects as go

COLORS = {  # the same network has the same colour on every page
    "resnet": "#1f77b4",  # blue: the ResNet (with shortcuts)
    "plain": "#d62728",  # red: its plain twin (same layers, shortcuts removed)
    "shallow_plain": "#ff7f0e",  # orange: a shallower plain net
}
SEQUENTIAL = "Viridis"  # magnitudes (>= 0): Grad-CAM, sizes; perceptually uniform, readable in grey
DIVERGING = "RdBu_r"  # signed values: blue negative, white zero, red positive
FONT_SIZE = 14  # px: ticks, legends, labels, annotations
TITLE_SIZE = 17  # px: chart titles
TEXT_COLOR = "#1a1a1a"  # near-black on the white page


def readable(fig: go.Figure) -> go.Figure:
    """Every text of ``fig`` at least ``FONT_SIZE`` px and dark (titles ``TITLE_SIZE``); returns ``fig``."""
    font = dict(size=FONT_SIZE, color=TEXT_COLOR)
    fig.update_layout(font=font, title_font=dict(size=TITLE_SIZE, color=TEXT_COLOR), legend_font=font,
                      hoverlabel_font_size=FONT_SIZE)
    fig.update_xaxes(tickfont=font, title_font=font)
    fig.update_yaxes(tickfont=font, title_font=font)
    for a in fig.layout.annotations:
        a.font = dict(size=max(FONT_SIZE, a.font.size or 0), color=a.font.color or TEXT_COLOR)
    return fig


def overlay_scale(signed: bool, max_alpha: float = 0.75) -> list[list]:
    """A colour scale for a heat map laid over a photo: ``DIVERGING`` (signed) or ``SEQUENTIAL``, transparent
    where the value is near zero and more opaque as it grows, so the photo stays visible under weak values."""
    name = DIVERGING if signed else SEQUENTIAL
    colours = plotly.colors.get_colorscale(name)
    out = []
    for pos, colour in colours:
        r, g, b = plotly.colors.unlabel_rgb(plotly.colors.convert_colors_to_same_type(colour, "rgb")[0][0])
        strength = abs(2 * pos - 1) if signed else pos  # distance from zero on the scale
        out.append([pos, f"rgba({r:.0f}, {g:.0f}, {b:.0f}, {max_alpha * strength ** 0.7:.3f})"])
    return out
