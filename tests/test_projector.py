"""Projector mode: every text and line of a chart scaled up, nothing else changed, the original left alone."""
import numpy as np
import plotly.graph_objects as go
import pytest

from resviz.plots.projector import PLOTLY_FONT_PX, PLOTLY_LINE_PX, for_projector


def test_explicit_sizes_are_scaled_and_nothing_else():
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 2], mode="lines+markers", line_width=3, marker_size=9,
                               textfont_size=10))
    fig.add_trace(go.Histogram(x=[1, 2, 2, 3], xbins=dict(size=0.5), marker_line_width=1))
    fig.update_layout(font_size=14, title=dict(text="t", font_size=17), width=700, legend_font_size=13)
    fig.update_xaxes(tickfont_size=15, title_font_size=16, linewidth=2)
    fig.add_annotation(text="note", font_size=11, x=0, y=0)
    fig.add_shape(type="line", x0=0, x1=1, y0=0, y1=1, line_width=4)
    big = for_projector(fig, 2)

    assert (big.layout.font.size, big.layout.title.font.size, big.layout.legend.font.size) == (28, 34, 26)
    assert (big.layout.xaxis.tickfont.size, big.layout.xaxis.title.font.size) == (30, 32)
    assert big.layout.annotations[0].font.size == 22 and big.layout.shapes[0].line.width == 8
    assert big.data[0].line.width == 6 and big.data[0].textfont.size == 20 and big.data[1].marker.line.width == 2
    # Not text, not lines: the figure's width, an axis line, marker sizes, histogram bins.
    assert big.layout.width == 700 and big.layout.xaxis.linewidth == 2
    assert big.data[0].marker.size == 9 and big.data[1].xbins.size == 0.5
    assert fig.layout.font.size == 14 and fig.data[0].line.width == 3  # the original is untouched


def test_plotly_defaults_are_scaled_too():
    big = for_projector(go.Figure(go.Scatter(y=np.arange(30.0))), 1.5)
    assert big.layout.font.size == pytest.approx(PLOTLY_FONT_PX * 1.5)
    assert big.data[0].line.width == pytest.approx(PLOTLY_LINE_PX * 1.5)


def test_per_label_sizes_are_scaled_each():
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="text", text=["a", "b"], textfont_size=np.array([10, 20])))
    assert list(for_projector(fig, 1.5).data[0].textfont.size) == [15, 30]


def test_projector_scales_the_page_text_and_is_in_the_link():
    """On a projector every text a back row reads grows (Streamlit sizes body text, captions, tables and widget
    labels in rem), not only the charts; the switch is bound to the URL, so a reload or a shared link keeps it."""
    from helpers import new_app
    from resviz import ui

    def styles(at):
        return [h.proto.body for h in at.get("html")]

    off, on = new_app(), new_app(sidebar={"projector": True})
    rule = f"html {{font-size: {ui.PROJECTOR_TEXT_PX}px;}}"
    assert not any(rule in s for s in styles(off)) and any(rule in s for s in styles(on))
    assert ui.PROJECTOR_TEXT_PX > 16  # larger than Streamlit's own 16 px
    assert on.query_params.get("projector") in (["true"], "true")
