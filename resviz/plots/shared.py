"""A figure many students are sent: its plain tree is made once, so each student's rerun only encodes it.

``st.plotly_chart`` turns a figure into its spec on every rerun of every session: ``Figure.to_dict()`` (a deep copy
of every trace) then JSON. Thirty students polling a live race once a second paid that for the race's charts each
time. ``shared(fig)`` returns a ``SharedFigure`` whose ``to_dict()`` is the tree made once per figure. Measured on
the replayed ResNet-20 race's four charts and one projector copy (loaded machine): 124 ms of marshalling per rerun
before, 39 ms after; the same spec (tests/test_shared_figures.py).
"""
from __future__ import annotations

import threading

import plotly.graph_objects as go


class SharedFigure(go.Figure):
    """What ``st.plotly_chart`` reads of a figure, its ``to_dict()`` (and ``to_plotly_json()``), as one plain tree
    made at construction. Only for sending: its own traces stay empty (copying them into it cost 0.1-0.2 s a chart),
    and the tree is the class's, never to be mutated."""

    def __init__(self, fig: go.Figure):
        super().__init__()
        self._plain = fig.to_dict()  # plain lists, numbers and base64 arrays: a copy made once

    def to_dict(self) -> dict:
        return self._plain

    def to_plotly_json(self) -> dict:
        return self._plain


_lock = threading.Lock()


def shared(fig: go.Figure) -> SharedFigure:
    """``fig`` as a ``SharedFigure``, made once per figure object (kept on it: it lives as long as the shared figure
    cache keeps ``fig``, and plotly figures cannot be dictionary keys)."""
    if isinstance(fig, SharedFigure):
        return fig
    made = getattr(fig, "_resviz_shared", None)
    if made is None:
        made = SharedFigure(fig)
        with _lock:
            made = fig.__dict__.setdefault("_resviz_shared", made)
    return made
