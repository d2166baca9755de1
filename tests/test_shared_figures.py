"""resviz.plots.shared: a figure sent to many students is turned into its plain tree once, and sends the same spec."""
import json

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import plotly.tools

from resviz.plots.projector import for_projector
from resviz.plots.shared import SharedFigure, shared


def _spec(fig) -> str:
    """The spec ``st.plotly_chart`` sends for ``fig`` (streamlit/elements/plotly_chart.py, these two calls)."""
    return pio.to_json(plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True), validate=False)


def _figure() -> go.Figure:
    rng = np.random.default_rng(0)
    fig = go.Figure([go.Scatter(x=np.arange(50), y=rng.normal(size=50).astype(np.float32), name="ResNet <b>"),
                     go.Heatmap(z=rng.normal(size=(8, 50)), colorscale="Viridis")])
    fig.update_layout(title="loss", height=450, yaxis_type="log")
    return fig


def test_a_shared_figure_sends_the_same_spec_as_the_figure():
    fig = _figure()
    for f in (fig, for_projector(fig)):
        assert _spec(shared(f)) == _spec(f)


def test_the_plain_tree_is_made_once_per_figure_and_never_from_the_figure_again():
    fig = _figure()
    made = shared(fig)
    assert isinstance(made, SharedFigure) and shared(fig) is made and shared(made) is made
    assert shared(_figure()) is not made  # another figure object, another tree
    json.dumps(made.to_dict())  # lists and floats only (no numpy): the C encoder's fast path, no plotly encoder
    spec = _spec(fig)

    def copied(*_, **__):
        raise AssertionError("a student's rerun copied the figure again")

    fig.to_dict = fig.to_plotly_json = copied
    assert _spec(shared(fig)) == spec  # what every later student is sent: the tree made once
