"""The network as an interactive graph: stem, one row per stage (its blocks) or per block (its layers), head.

The main path runs left to right along a row; every shortcut dips below it, coloured by its kind (colours no
other element uses). A stage with many blocks folds its identical middle blocks into one node
("layer3.1 … layer3.34, ×34 identical blocks"). Positions are computed here from the traced ``networkx`` graph
(``topological_generations`` orders a block's layers); plotly draws them, with tensor shapes on hover.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import plotly.graph_objects as go

from resviz.lessons.architecture import mismatch_text, shortcut_label
from resviz.trace import Block, ShortcutKind, Trace, fmt_shape

FONT = dict(size=14, color="#1a1a1a")  # at least 14 px and dark: readable from the back of a classroom
SHORTCUT_COLOURS = {  # used by nothing else in the figure
    ShortcutKind.IDENTITY: "#2ca02c",  # green
    ShortcutKind.PROJECTION: "#ff7f0e",  # orange
    ShortcutKind.ZERO_PAD: "#d6279b",  # magenta
}
NODE_STYLE = {  # op -> (colour, marker symbol, size, legend name)
    "input": ("#1a1a1a", "square", 14, "input / output"),
    "conv": ("#1f4e8c", "square", 14, "convolution"),
    "bn": ("#9e9e9e", "circle", 12, "batch norm"),
    "relu": ("#5c5c5c", "triangle-right", 13, "ReLU"),
    "maxpool": ("#17becf", "diamond", 14, "pooling"),
    "avgpool": ("#17becf", "diamond", 14, "pooling"),
    "fc": ("#8c6bb1", "square", 14, "fully connected"),
    "x": ("#1a1a1a", "circle-open", 13, "block input x"),
    "block": ("#4a6c8c", "square", 22, "residual block: F(x)"),
    "plain-block": ("#4a6c8c", "square", 22, "plain block (no shortcut)"),
    "fold": ("#9fb3c8", "square", 30, "identical blocks, folded"),
    "add": ("#1a1a1a", "circle-cross-open", 16, "addition F(x) + x"),
    "proj": (SHORTCUT_COLOURS[ShortcutKind.PROJECTION], "square", 13, "1x1 projection on the shortcut"),
    "zero-pad": (SHORTCUT_COLOURS[ShortcutKind.ZERO_PAD], "hexagon", 14, "zero-pad on the shortcut (option A)"),
    "failed": ("#b30000", "x", 20, "cannot run"),
}
EDGE_STYLE = {  # edge kind (None: the main path; "link": to the next row) -> (colour, width, dash, legend name)
    None: ("#7a7a7a", 2, "solid", "main path F(x)"),
    ShortcutKind.IDENTITY: (SHORTCUT_COLOURS[ShortcutKind.IDENTITY], 3, "solid", "identity shortcut"),
    ShortcutKind.PROJECTION: (SHORTCUT_COLOURS[ShortcutKind.PROJECTION], 3, "solid", "projection shortcut"),
    ShortcutKind.ZERO_PAD: (SHORTCUT_COLOURS[ShortcutKind.ZERO_PAD], 3, "dash", "zero-pad shortcut"),
    "failed": ("#b30000", 2, "dot", "cannot run"),
}  # "link" edges (the end of a row to the start of the next) are not drawn: rows read like lines of text
BLOCK_STEP = 2.0  # x units per block in a stage row
FOLD_STEP = 4.0  # a folded run needs room for its two-line label
LAYER_STEP = 1.6  # x units per layer in a block row
DIP = 0.45  # how far below its row a shortcut runs
ROW_GAP = {"layers": 1.25, "blocks": 1.1, "plain": 0.9}  # y units between a row and the next
MAX_ROW = 8  # a stage with more blocks folds its identical middle blocks
MIN_SPAN = 12.0  # x units: small networks do not spread over the whole width
PX_PER_UNIT_Y = 95


@dataclass(frozen=True)
class Fold:
    """Consecutive identical blocks drawn as one node."""

    blocks: tuple[Block, ...]

    @property
    def name(self) -> str:
        return f"{self.blocks[0].name} … {self.blocks[-1].name}"

    @property
    def shortcut(self) -> ShortcutKind:
        return self.blocks[0].shortcut

    @property
    def in_shape(self) -> tuple:
        return self.blocks[0].in_shape

    @property
    def out_shape(self) -> tuple:
        return self.blocks[-1].out_shape


def fold_stage(blocks: list[Block], max_row: int = MAX_ROW) -> list[Block | Fold]:
    """The stage as drawn: as it is up to ``max_row`` blocks; else each run of identical blocks longer than
    two becomes a Fold of all but its last block (ResNet-152's layer3: layer3.0, layer3.1 … layer3.34, layer3.35)."""
    if len(blocks) <= max_row:
        return list(blocks)
    out, run = [], []
    for b in [*blocks, None]:
        if run and (b is None or _signature(b) != _signature(run[0])):
            out += [Fold(tuple(run[:-1])), run[-1]] if len(run) > 2 else run
            run = []
        if b is not None:
            run.append(b)
    return out


def _signature(b: Block) -> tuple:
    return b.in_shape, b.out_shape, b.shortcut, b.channels, b.stride


class _Layout:
    """Places rows top to bottom, keeping the last node drawn so the next row can link to it."""

    def __init__(self, trace: Trace):
        self.trace, self.full, self.g = trace, trace.graph, nx.DiGraph()
        self.y, self.last = 0.0, None

    def node(self, name: str, x: float, op: str, label: str, hover: str, dy: float = 0.0, **data) -> None:
        self.g.add_node(name, pos=(x, self.y + dy), op=op, label=label, hover=hover, **data)

    def edge(self, u: str, v: str, kind=None, shape=None, arc: bool = False) -> None:
        self.g.add_edge(u, v, kind=kind, shape=shape, arc=arc)

    def next_row(self, kind: str) -> None:
        self.y -= ROW_GAP[kind]

    def layer_row(self, names: list[str]) -> None:
        """A row of plain layers (stem or head), chained along the main path."""
        for i, n in enumerate(names):
            d = self.full.nodes[n]
            self.node(n, i * LAYER_STEP, d["op"] if d["op"] in NODE_STYLE else "input", n, _layer_hover(n, d),
                      shape=d.get("out_shape"))
            if i == 0 and self.last:
                self.edge(self.last, n, "link", d.get("in_shape"))
            elif i:
                self.edge(names[i - 1], n, None, self.full.nodes[names[i - 1]].get("out_shape"))
        self.last = names[-1]

    def stage_row(self, stage: str, blocks: list[Block]) -> None:
        """One stage as a row of blocks; each residual block's shortcut runs below it to its addition."""
        start = f"{stage}.in"
        self.node(start, 0.0, "x", stage, f"<b>{stage}</b> input x: {fmt_shape(blocks[0].in_shape)}",
                  text_position="middle left")
        if self.last:
            self.edge(self.last, start, "link", blocks[0].in_shape)
        prev, x = start, 0.0
        for item in fold_stage(blocks):
            step = FOLD_STEP if isinstance(item, Fold) else BLOCK_STEP
            mid, x = x + step / 2, x + step
            fold = isinstance(item, Fold)
            op = "fold" if fold else "block" if item.shortcut is not ShortcutKind.NONE else "plain-block"
            self.node(item.name, mid, op, _block_label(item), _block_hover(item), shape=item.out_shape)
            self.edge(prev, item.name, None, item.in_shape)
            if item.shortcut is ShortcutKind.NONE:
                prev = item.name
                continue
            add = f"{item.name}.add"
            self.node(add, x, "add", "", f"F(x) + x = {fmt_shape(item.out_shape)}", shape=item.out_shape)
            self.edge(item.name, add, None, item.out_shape)
            self.edge(prev, add, item.shortcut, item.in_shape, arc=True)
            if item.shortcut is not ShortcutKind.IDENTITY:  # what sits on the shortcut, at the bottom of its dip
                self.node(f"{item.name}.shortcut", mid, "proj" if item.shortcut is ShortcutKind.PROJECTION
                          else "zero-pad", "", _shortcut_hover(item), dy=-DIP / 2)
            prev = add
        self.last = prev

    def block_row(self, block: Block) -> None:
        """One block as a row of layers: x, the main path F(x), the shortcut's layers below, the addition."""
        members = [n for n, d in self.full.nodes(data=True) if d.get("block") == block.name]
        x_node = f"{block.name}.x"
        self.node(x_node, 0.0, "x", f"{block.name}: x", f"<b>{block.name}</b> input x: {fmt_shape(block.in_shape)}")
        if self.last:
            self.edge(self.last, x_node, "link", block.in_shape)
        for k, gen in enumerate(nx.topological_generations(self.full.subgraph(members)), start=1):
            for n in gen:
                d = self.full.nodes[n]
                side = d["path"] == "shortcut"
                op = ("proj" if d["op"] in ("conv", "bn") else d["op"]) if side else d["op"]
                self.node(n, k * LAYER_STEP, op, _side_label(d) if side else n.split(".")[-1], _layer_hover(n, d),
                          dy=-DIP if side else 0.0, shape=d.get("out_shape"))
        for u, v, d in self.full.edges(members, data=True):
            if v in members:
                self.edge(u if u in members else x_node, v, d["kind"], d["shape"],
                          arc=d["kind"] is ShortcutKind.IDENTITY)
        for u, v, d in self.full.in_edges(members, data=True):
            if u not in members:  # x enters the main path and the shortcut
                self.edge(x_node, v, d["kind"], d["shape"], arc=d["kind"] is ShortcutKind.IDENTITY)
        self.last = members[-1] if members else x_node

    def fold_row(self, fold: Fold) -> None:
        """Identical blocks in an expanded stage, drawn as one node."""
        self.node(fold.name, 0.0, "fold", f"{_block_label(fold).replace('<br>', ', ')}: the same layers as the "
                  "next block", _block_hover(fold), shape=fold.out_shape, text_position="middle right")
        if self.last:
            self.edge(self.last, fold.name, "link", fold.in_shape)
        self.last = fold.name

    def failed(self, layer: str, error: str) -> None:
        """A red cross after the last layer traced: the layer that cannot run."""
        x, y = self.g.nodes[self.last]["pos"] if self.last else (-LAYER_STEP, self.y)
        self.g.add_node("failed", pos=(x + LAYER_STEP, y), op="failed", label=f"{layer}: cannot run",
                        hover=f"<b>{layer}</b><br>{error}", text_position="bottom center")
        if self.last:
            self.edge(self.last, "failed", "failed")


def layout_graph(trace: Trace, expand: set[str] | str = ()) -> nx.DiGraph:
    """A display graph with ``pos`` on every node. ``expand``: stage names to show layer by layer, or 'all'."""
    lay = _Layout(trace)
    lay.layer_row(["input"] + [r["name"] for r in trace.rows if r["stage"] == "stem"])
    for stage in dict.fromkeys(b.stage for b in trace.blocks):
        blocks = [b for b in trace.blocks if b.stage == stage]
        if expand == "all" or stage in expand:
            for item in fold_stage(blocks):
                lay.next_row("layers")
                lay.fold_row(item) if isinstance(item, Fold) else lay.block_row(item)
        else:
            lay.next_row("blocks" if trace.cfg.residual else "plain")
            lay.stage_row(stage, blocks)
    head = [r["name"] for r in trace.rows if r["stage"] == "head"]
    if head:
        lay.next_row("plain")
        lay.layer_row(head)
    if trace.failed_layer:
        lay.failed(trace.failed_layer, trace.error or "")
    return lay.g


def _block_label(item: Block | Fold) -> str:
    if isinstance(item, Fold):
        return f"{item.name}<br>×{len(item.blocks)} identical blocks"
    return f"{item.name}<br>{fmt_shape(item.out_shape)}"


def _block_hover(item: Block | Fold) -> str:
    b = item.blocks[0] if isinstance(item, Fold) else item
    head = f"<b>{item.name}</b>" + (f" ({len(item.blocks)} blocks, each:)" if isinstance(item, Fold) else "")
    return "<br>".join([head, f"{b.type}: x {fmt_shape(b.in_shape)} → {fmt_shape(b.out_shape)}",
                        "channels along F(x): " + " → ".join(map(str, b.channels)),
                        f"shortcut: {shortcut_label(b)}", f"why: {mismatch_text(b)}", f"parameters {b.params:,}"])


def _shortcut_hover(b: Block) -> str:
    return f"<b>shortcut of {b.name}</b><br>{shortcut_label(b)}<br>x {fmt_shape(b.in_shape)} → {fmt_shape(b.out_shape)}"


def _side_label(d: dict) -> str:
    return {"conv": f"1x1 conv /{d.get('stride')}", "bn": "bn", "zero-pad": "zero-pad"}.get(d["op"], "")


def _layer_hover(n: str, d: dict) -> str:
    parts = [f"<b>{n}</b>", d.get("op", "")]
    if d.get("out_shape") is not None:
        parts.append(f"out {fmt_shape(d['out_shape'])}")
    for key, fmt in (("params", "parameters {:,}"), ("macs", "MACs {:,}"), ("receptive_field", "receptive field {} px")):
        if d.get(key):
            parts.append(fmt.format(d[key]))
    return "<br>".join(parts)


def _curve(p0, p1, dip: float, n: int = 17) -> tuple[list, list]:
    """A quadratic Bézier from p0 to p1 sagging by ``dip`` at its middle (a shortcut running below the row)."""
    (x0, y0), (x1, y1) = p0, p1
    cx, cy = (x0 + x1) / 2, min(y0, y1) - 2 * dip  # the control point twice as low: the curve's middle is at -dip
    ts = [i / (n - 1) for i in range(n)]
    xs = [(1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t**2 * x1 for t in ts]
    ys = [(1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t**2 * y1 for t in ts]
    return xs, ys


def _edge_path(pos: dict, u: str, v: str, d: dict) -> tuple[list, list]:
    (x0, y0), (x1, y1) = pos[u], pos[v]
    if d.get("arc") and y0 == y1:
        return _curve(pos[u], pos[v], DIP / 2 if abs(x1 - x0) <= FOLD_STEP else DIP)
    return [x0, x1], [y0, y1]


def plot_architecture(g: nx.DiGraph, title: str = "") -> go.Figure:
    """Draw a laid-out display graph: edges by kind, nodes by kind, tensor shapes on hover."""
    fig = go.Figure()
    pos = nx.get_node_attributes(g, "pos")
    mids = []
    for kind, (colour, width, dash, label) in EDGE_STYLE.items():
        xs, ys = [], []
        for u, v, d in g.edges(data=True):
            if d.get("kind") == kind:
                cx, cy = _edge_path(pos, u, v, d)
                xs += cx + [None]
                ys += cy + [None]
                if d.get("shape") is not None:
                    mids.append((cx[len(cx) // 2], cy[len(cy) // 2], f"tensor {fmt_shape(d['shape'])}<br>{label}"))
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=label, hoverinfo="skip", legendgroup=label,
                                     showlegend=kind != "failed", line=dict(color=colour, width=width, dash=dash)))
    fig.add_trace(go.Scatter(x=[m[0] for m in mids], y=[m[1] for m in mids], mode="markers", showlegend=False,
                             marker=dict(size=8, color="rgba(0,0,0,0.10)"), hovertext=[m[2] for m in mids],
                             hoverinfo="text", name="tensor (hover)"))
    seen = set()
    for op, (colour, symbol, size, label) in NODE_STYLE.items():
        nodes = [(n, d) for n, d in g.nodes(data=True) if d.get("op") == op]
        if not nodes:
            continue
        fig.add_trace(go.Scatter(
            x=[pos[n][0] for n, _ in nodes], y=[pos[n][1] for n, _ in nodes], mode="markers+text", name=label,
            legendgroup=label, showlegend=label not in seen,
            marker=dict(size=size, color=colour, symbol=symbol, line=dict(width=1, color="white")),
            text=[d.get("label", "") for _, d in nodes], textfont=FONT, hoverinfo="text",
            textposition=[d.get("text_position", "top center") for _, d in nodes],
            hovertext=[d.get("hover", n) for n, d in nodes]))
        seen.add(label)
    return _frame(fig, pos, title)


def _frame(fig: go.Figure, pos: dict, title: str) -> go.Figure:
    """Axes fitted to the nodes (no blank band), a height that follows the rows, legend below, dark 14 px text."""
    xs, ys = [p[0] for p in pos.values()] or [0], [p[1] for p in pos.values()] or [0]
    top, bottom = max(ys) + 0.55, min(ys) - DIP - 0.35  # room for labels above and the lowest shortcut
    right = max(max(xs), MIN_SPAN)
    fig.update_layout(
        title=dict(text=title, x=0, font=dict(size=17, color=FONT["color"])), font=FONT, showlegend=True,
        height=int((top - bottom) * PX_PER_UNIT_Y) + 130, hovermode="closest", plot_bgcolor="white",
        legend=dict(orientation="h", y=0, yanchor="top", x=0, font=FONT), hoverlabel=dict(font_size=14),
        margin=dict(l=10, r=10, t=40, b=10),
        xaxis=dict(visible=False, range=[-1.6, right + 0.9]),  # room on the left for the stage names
        yaxis=dict(visible=False, range=[bottom, top]))
    return fig
