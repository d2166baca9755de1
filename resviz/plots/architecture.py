"""The network as an interactive graph: one row per stage (collapsed) or per block (expanded).

Positions come from the traced ``networkx`` graph (``topological_generations`` orders each block's layers
left to right); plotly draws them. Edges carry tensor shapes, shown on hover at each edge's midpoint.
"""
from __future__ import annotations

import networkx as nx
import plotly.graph_objects as go

from resviz.lessons.architecture import mismatch_text, shortcut_label
from resviz.trace import Block, ShortcutKind, Trace, fmt_shape

NODE_STYLE = {  # op -> (colour, marker symbol, legend name)
    "input": ("#444444", "square", "input / output"),
    "conv": ("#1f77b4", "square", "convolution"),
    "bn": ("#9e9e9e", "circle", "batch norm"),
    "relu": ("#2ca02c", "triangle-right", "ReLU"),
    "maxpool": ("#17becf", "diamond", "pooling"),
    "avgpool": ("#17becf", "diamond", "pooling"),
    "fc": ("#9467bd", "square", "fully connected"),
    "add": ("#000000", "circle-cross-open", "addition F(x) + x"),
    "zero-pad": ("#e377c2", "hexagon", "zero-pad shortcut (A)"),
    "proj": ("#ff7f0e", "square", "1x1 projection shortcut"),
    "block-identity": ("#7f7f7f", "circle", "block, identity shortcut"),
    "block-projection": ("#ff7f0e", "diamond", "block, 1x1 projection shortcut"),
    "block-pad": ("#e377c2", "hexagon", "block, zero-pad shortcut"),
    "block-plain": ("#1f77b4", "circle", "plain block (no shortcut)"),
    "x": ("#444444", "circle-open", "block input x"),
}
EDGE_STYLE = {  # edge kind (None: the main path; "link": between rows) -> (colour, width, dash, legend name)
    None: ("#8c8c8c", 1.5, "solid", "main path"),
    ShortcutKind.IDENTITY: ("#2ca02c", 2.5, "solid", "identity shortcut"),
    ShortcutKind.PROJECTION: ("#ff7f0e", 2.5, "solid", "projection shortcut"),
    ShortcutKind.ZERO_PAD: ("#e377c2", 2.5, "dash", "zero-pad shortcut"),
    "link": ("#d0d0d0", 1, "dot", "to next row"),
}
BLOCK_KIND = {ShortcutKind.NONE: "block-plain", ShortcutKind.PROJECTION: "block-projection",
              ShortcutKind.ZERO_PAD: "block-pad", ShortcutKind.IDENTITY: "block-identity"}
ROW_HEIGHT = 1.0


def _block_node(block: Block) -> dict:
    """A collapsed block's node attributes."""
    return dict(name=block.name, op=BLOCK_KIND[block.shortcut], block_info=block, out_shape=block.out_shape,
                params=block.params, label=f"{block.name}<br>{fmt_shape(block.out_shape)}")


def _layer_label(node: dict) -> str:
    name = node.get("name", "")
    if ".downsample" in name:
        return {"conv": f"1x1 conv /{node.get('stride')}", "bn": "bn", "zero-pad": "zero-pad"}.get(node["op"], "")
    return name.split(".")[-1] if node.get("block") else name


def layout_graph(trace: Trace, expand: set[str] | str = ()) -> nx.DiGraph:
    """A display graph with ``pos`` on every node. ``expand``: stage names to show layer by layer, or 'all'."""
    g, full = nx.DiGraph(), trace.graph
    row = [0.0]

    def place(columns: list[list[str]], data: dict[str, dict]) -> None:
        """Put one row on the page; nodes sharing a column after the first are shortcut layers, drawn below."""
        for x, column in enumerate(columns):
            for k, n in enumerate(column):
                if n is not None:  # slot 0 is the main path; an empty one leaves a gap above a shortcut layer
                    g.add_node(n, pos=(x, -row[0] - 0.45 * k), **data[n])
        row[0] += ROW_HEIGHT

    def chain(nodes: list[str]) -> None:
        for u, v in zip(nodes, nodes[1:]):
            g.add_edge(u, v, **(full.edges[u, v] if full.has_edge(u, v) else dict(shape=None, kind=None)))

    stem = ["input"] + [r["name"] for r in trace.rows if r["stage"] == "stem"]
    place([[n] for n in stem], {n: full.nodes[n] for n in stem})
    chain(stem)
    last = stem[-1]
    for stage in dict.fromkeys(b.stage for b in trace.blocks):
        blocks = [b for b in trace.blocks if b.stage == stage]
        if expand == "all" or stage in expand:
            for b in blocks:
                last = _place_block_row(g, full, b, last, place)
        else:
            place([[b.name] for b in blocks], {b.name: _block_node(b) for b in blocks})
            g.add_edge(last, blocks[0].name, shape=blocks[0].in_shape, kind="link")
            for a, b in zip(blocks, blocks[1:]):
                g.add_edge(a.name, b.name, shape=a.out_shape, kind=None)
            last = blocks[-1].name
    head = [r["name"] for r in trace.rows if r["stage"] == "head"]
    if head:
        place([[n] for n in head], {n: full.nodes[n] for n in head})
        g.add_edge(last, head[0], shape=full.nodes[head[0]]["in_shape"], kind="link")
        chain(head)
    return g


def _place_block_row(g: nx.DiGraph, full: nx.DiGraph, block: Block, prev: str, place) -> str:
    """Lay one block out as a row: its input x, the main path, the shortcut branch below; returns its output node."""
    members = [n for n, d in full.nodes(data=True) if d.get("block") == block.name]
    x_node = f"{block.name}.x"
    data = {x_node: dict(name=x_node, op="x", block=block.name, out_shape=block.in_shape, label=f"{block.name}: x")}
    columns = [[x_node]]
    for gen in nx.topological_generations(full.subgraph(members)):
        main = [n for n in gen if full.nodes[n]["path"] == "main"]
        side = [n for n in gen if full.nodes[n]["path"] == "shortcut"]
        for n in main + side:
            data[n] = dict(full.nodes[n])
        for n in side:
            data[n]["label"] = _layer_label(data[n])
            data[n]["op"] = "proj" if data[n]["op"] in ("conv", "bn") else data[n]["op"]
        columns.append([main[0] if main else None, *main[1:], *side])
    place(columns, data)
    for u, v, d in full.subgraph(members).edges(data=True):
        g.add_edge(u, v, **d)
    for u, v, d in full.in_edges(members, data=True):
        if u not in members:  # the block's input enters the main path and the shortcut
            g.add_edge(x_node, v, **d)
    g.add_edge(prev, x_node, shape=block.in_shape, kind="link")
    return columns[-1][0]


def _curve(p0, p1, lift: float, n: int = 16) -> tuple[list, list]:
    """A quadratic Bezier from p0 to p1 bulging up by ``lift`` (for shortcuts that skip layers)."""
    (x0, y0), (x1, y1) = p0, p1
    cx, cy = (x0 + x1) / 2, max(y0, y1) + lift
    ts = [i / (n - 1) for i in range(n)]
    xs = [(1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t**2 * x1 for t in ts]
    ys = [(1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t**2 * y1 for t in ts]
    return xs, ys


def _hover(n: str, d: dict) -> str:
    parts = [f"<b>{n}</b>", d.get("op", "")]
    if d.get("block_info"):
        b = d["block_info"]
        parts += [f"in {fmt_shape(b.in_shape)} → out {fmt_shape(b.out_shape)}",
                  f"shortcut: {shortcut_label(b)}", f"why: {mismatch_text(b)}"]
    elif d.get("out_shape") is not None:
        parts.append(f"out {fmt_shape(d['out_shape'])}")
    if d.get("params"):
        parts.append(f"params {d['params']:,}")
    if d.get("macs"):
        parts.append(f"MACs {d['macs']:,}")
    if d.get("receptive_field"):
        parts.append(f"receptive field {d['receptive_field']} px")
    return "<br>".join(parts)


def plot_architecture(g: nx.DiGraph, title: str = "") -> go.Figure:
    """Draw a laid-out display graph: nodes by kind, edges by kind, tensor shapes on edge hover."""
    fig = go.Figure()
    pos = nx.get_node_attributes(g, "pos")
    for kind, (colour, width, dash, label) in EDGE_STYLE.items():
        xs, ys = [], []
        for u, v, d in g.edges(data=True):
            if d.get("kind") != kind:
                continue
            (x0, y0), (x1, y1) = pos[u], pos[v]
            if kind is ShortcutKind.IDENTITY and abs(x1 - x0) > 1 and y0 == y1:
                cx, cy = _curve(pos[u], pos[v], 0.35)
            else:
                cx, cy = [x0, x1], [y0, y1]
            xs += cx + [None]
            ys += cy + [None]
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=label, hoverinfo="skip",
                                     line=dict(color=colour, width=width, dash=dash)))
    mids = [(pos[u], pos[v], d) for u, v, d in g.edges(data=True) if d.get("shape") is not None]
    fig.add_trace(go.Scatter(
        x=[(a[0] + b[0]) / 2 for a, b, _ in mids],
        y=[(a[1] + b[1]) / 2 + (0.17 if d["kind"] is ShortcutKind.IDENTITY and a[1] == b[1] and abs(b[0] - a[0]) > 1 else 0)
           for a, b, d in mids],
        mode="markers", marker=dict(size=7, color="rgba(0,0,0,0.08)"), name="tensor (hover)",
        hovertext=[f"tensor {fmt_shape(d['shape'])}<br>{EDGE_STYLE[d['kind']][3]}" for _, _, d in mids],
        hoverinfo="text", showlegend=False))
    seen = set()
    for op, (colour, symbol, label) in NODE_STYLE.items():
        nodes = [(n, d) for n, d in g.nodes(data=True) if d.get("op") == op]
        if not nodes:
            continue
        fig.add_trace(go.Scatter(legendgroup=label, showlegend=label not in seen,
            x=[pos[n][0] for n, _ in nodes], y=[pos[n][1] for n, _ in nodes], mode="markers+text", name=label,
            marker=dict(size=16 if op.startswith("block") else 13, color=colour, symbol=symbol,
                        line=dict(width=1, color="white")),
            text=[d.get("label") or _layer_label(d) for _, d in nodes], textposition="top center",
            textfont=dict(size=9), hovertext=[_hover(n, d) for n, d in nodes], hoverinfo="text"))
        seen.add(label)
    rows = len({round(p[1], 3) for p in pos.values() if float(p[1]).is_integer()}) or 1
    fig.update_layout(title=dict(text=title, y=0.995, yanchor="top"), height=max(380, 80 * rows + 160),
                      showlegend=True, hovermode="closest",
                      legend=dict(orientation="h", y=-0.01, yanchor="top", x=0, font=dict(size=11)),
                      margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="white",
                      xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig
