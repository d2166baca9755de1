"""Projector mode: a chart's text and lines scaled up, so the back row of a classroom can read it.

Pure plotly (no streamlit): the app applies ``for_projector`` to a figure when the sidebar's "Projector" toggle
is on, per student, so one student's choice never changes another's charts (a process-wide plotly template
default would).
"""
from __future__ import annotations

import base64
from numbers import Real

import numpy as np
import plotly.graph_objects as go

SCALE = 1.4  # text and lines x1.4: 14 px text becomes 20 px, a 2 px line 2.8 px
PLOTLY_FONT_PX = 12  # plotly's own text size where a figure sets none
PLOTLY_LINE_PX = 2  # plotly's own width of a scatter trace's line


def _scalable(parent: str, key: str) -> bool:
    """Font sizes (``font``, ``tickfont``, ``textfont``...) and line widths; never bin sizes or figure widths."""
    return (key == "size" and parent.endswith("font")) or (key == "width" and parent == "line")


def _array(value) -> np.ndarray:
    """Numbers as an array; plotly writes numpy arrays as ``{"dtype", "bdata", "shape"}`` (base64) in its JSON."""
    if isinstance(value, dict):
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return out.reshape([int(n) for n in str(value["shape"]).split(",")]) if "shape" in value else out
    return np.asarray(value, dtype=float)


def _scale(node, k: float, parent: str = "") -> None:
    """Multiply every scalable number under ``node`` (a plotly JSON dict or list) by ``k``, in place."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in list(items):
        if isinstance(value, (dict, list)) and not (isinstance(key, str) and _scalable(parent, key)):
            _scale(value, k, key if isinstance(key, str) else parent)
        elif isinstance(key, str) and _scalable(parent, key):
            if isinstance(value, Real) and not isinstance(value, bool):
                node[key] = value * k
            elif isinstance(value, (dict, list, tuple, np.ndarray)):  # one size per point or per label
                node[key] = (_array(value) * k).tolist()


def for_projector(fig: go.Figure, scale: float = SCALE) -> go.Figure:
    """A copy of ``fig`` whose text (every font size) and lines (every line width) are ``scale`` times larger."""
    spec = fig.to_plotly_json()
    _scale(spec, scale)
    spec["layout"].setdefault("font", {}).setdefault("size", PLOTLY_FONT_PX * scale)
    for trace in spec["data"]:
        if trace.get("type", "scatter") in ("scatter", "scattergl") and "lines" in trace.get("mode", "lines"):
            trace.setdefault("line", {}).setdefault("width", PLOTLY_LINE_PX * scale)
    return go.Figure(spec)
