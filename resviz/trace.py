"""Shape tracing: every layer, block and shortcut of a ResNet, without running a real convolution.

The model is built on PyTorch's ``meta`` device, where tensors carry shapes but no data, and one forward
pass with hooks records what each module receives and returns. The result is a table (one row per layer)
and a ``networkx.DiGraph`` whose edges carry the tensor shapes.
"""
from __future__ import annotations

import csv
import enum
import functools
import io
from dataclasses import dataclass, field

import networkx as nx
import torch
from torch import nn

from resviz.models import Add, ConfigError, PadShortcut, ResNet, ResNetConfig, check_config

LEAF_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Linear, PadShortcut, Add)
OP_NAMES = {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.ReLU: "relu", nn.MaxPool2d: "maxpool",
            nn.AdaptiveAvgPool2d: "avgpool", nn.Linear: "fc", PadShortcut: "zero-pad", Add: "add"}
TABLE_COLUMNS = ("name", "stage", "block", "path", "op", "kernel", "stride", "in_shape", "out_shape",
                 "params", "macs", "receptive_field")


class ShortcutKind(enum.Enum):
    """What a block adds to F(x). The value is the short name a page may show."""

    IDENTITY = "identity"  # x as it is
    ZERO_PAD = "zero-pad"  # option A: keep every s-th pixel, append channels of zeros
    PROJECTION = "1x1 projection"  # options B and C: a 1x1 conv (+ batch norm)
    NONE = "none"  # the plain twin adds nothing


@dataclass(frozen=True)
class Block:
    """One residual block as traced: its input x and output shapes, its shortcut, its main path's channels."""

    name: str  # "layer2.0"
    stage: str  # "layer2"
    type: str  # "BasicBlock" or "Bottleneck"
    in_shape: tuple[int, ...]  # x: (C, H, W)
    out_shape: tuple[int, ...]  # F(x), and the block's output
    stride: int
    shortcut: ShortcutKind
    option: str  # the config's shortcut option (A, B or C) that chose ``shortcut``
    channels: tuple[int, ...]  # C_in, then each main-path conv's C_out: (256, 64, 64, 256) in a bottleneck
    groups: int  # of the 3x3 conv (32 in ResNeXt-50 32x4d)
    params: int

    @property
    def channels_differ(self) -> bool:
        return self.in_shape[0] != self.out_shape[0]

    @property
    def size_differs(self) -> bool:
        return self.in_shape[1:] != self.out_shape[1:]

    @property
    def shapes_differ(self) -> bool:
        """x cannot be added to F(x) as it is."""
        return self.in_shape != self.out_shape


@dataclass
class Trace:
    """What ``trace_shapes`` found: per-layer rows, per-block summaries, the dataflow graph."""

    cfg: ResNetConfig
    rows: list[dict] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    graph: nx.DiGraph = field(default_factory=nx.DiGraph)
    error: str | None = None  # why tracing stopped early, in plain words
    failed_layer: str | None = None  # the first layer that could not run (None: the configuration itself)
    idle_strides: list[str] = field(default_factory=list)  # strided layers that met a 1x1 map: it stays 1x1

    @property
    def total_params(self) -> int:
        return sum(r["params"] for r in self.rows)

    @property
    def total_macs(self) -> int:
        return sum(r["macs"] for r in self.rows)

    @property
    def output_shape(self) -> tuple | None:
        return self.rows[-1]["out_shape"] if self.rows and not self.error else None

    def to_csv(self) -> str:
        """The layer table as CSV text (shapes as CxHxW)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({**row, "in_shape": fmt_shape(row["in_shape"]), "out_shape": fmt_shape(row["out_shape"])})
        return buf.getvalue()


def fmt_shape(shape) -> str:
    """(64, 56, 56) -> '64×56×56' (channels × height × width); (C,) stays one number; None -> '—'."""
    if shape is None:
        return "—"
    if isinstance(shape[0], tuple):  # the add's two operands
        return " + ".join(fmt_shape(s) for s in shape)
    return "×".join(str(d) for d in shape)


def conv_macs(conv: nn.Conv2d, out_shape: tuple) -> int:
    """Multiply-accumulates of one conv for one image: each output element sums C_in/groups x kh x kw products."""
    kh, kw = conv.kernel_size
    return int(torch.Size(out_shape).numel()) * (conv.in_channels // conv.groups) * kh * kw


def layer_macs(module: nn.Module, out_shape: tuple) -> int:
    """MACs of the multiply-heavy layers (conv, fc), as torchvision's published GFLOPS count them."""
    if isinstance(module, nn.Conv2d):
        return conv_macs(module, out_shape)
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


def grow_receptive_field(module: nn.Module, rf: int, jump: int, in_size: int) -> tuple[int, int]:
    """Receptive field and jump (input pixels between neighbouring outputs) after ``module``."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
        k = module.kernel_size[0] if isinstance(module.kernel_size, tuple) else module.kernel_size
        s = module.stride[0] if isinstance(module.stride, tuple) else module.stride
        return rf + (k - 1) * jump, jump * s
    if isinstance(module, PadShortcut):
        return rf, jump * module.stride
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return rf + (in_size - 1) * jump, jump * in_size
    return rf, jump


def _location(name: str, stage_names: list[str]) -> tuple[str, str, str]:
    """(stage, block, path) of a module name like 'layer2.0.downsample.0'."""
    parts = name.split(".")
    if parts[0] in stage_names:
        block = ".".join(parts[:2])
        path = "shortcut" if len(parts) > 2 and parts[2] == "downsample" else "main"
        return parts[0], block, path
    return ("stem" if name in ("conv1", "bn1", "relu", "maxpool") else "head"), "", "main"


def shortcut_kind(block: nn.Module) -> ShortcutKind:
    """The kind of shortcut a built block adds to F(x)."""
    if not block.residual:
        return ShortcutKind.NONE
    if block.downsample is None:
        return ShortcutKind.IDENTITY
    return ShortcutKind.ZERO_PAD if isinstance(block.downsample, PadShortcut) else ShortcutKind.PROJECTION


class TraceStop(Exception):
    """Raised to stop tracing at ``layer``, the first layer that cannot work; the message says why."""

    def __init__(self, layer: str, message: str):
        super().__init__(message)
        self.layer = layer


@dataclass(frozen=True)
class _Flow:
    """A tensor on its way through the network: who made it, its shape, receptive field and jump."""

    node: str
    shape: tuple
    rf: int = 1
    jump: int = 1


def out_shape(name: str, module: nn.Module, shape: tuple) -> tuple:
    """The output shape (without batch) of ``module`` for input ``shape``, by the layer's own formula.

    Raises TraceStop only where PyTorch itself refuses (a stride on a 1x1 map is not refused: it stays 1x1).
    """
    if isinstance(module, nn.Linear):
        flat = int(torch.Size(shape).numel())
        if flat != module.in_features:
            raise TraceStop(name, f"Layer `{name}` expects {module.in_features} features but receives {flat}.")
        return (module.out_features,)
    c, h, w = shape
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return (c, 1, 1)
    if isinstance(module, PadShortcut):
        return (module.out_ch, -(-h // module.stride), -(-w // module.stride))
    if not isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
        return shape
    k, s, p, d = (_attr(module, a) for a in ("kernel_size", "stride", "padding", "dilation"))
    if isinstance(module, nn.Conv2d) and c != module.in_channels:
        raise TraceStop(name, f"Layer `{name}` expects {module.in_channels} input channels but receives {c} "
                        f"(shape {fmt_shape(shape)}).")
    oh, ow = ((x + 2 * p - d * (k - 1) - 1) // s + 1 for x in (h, w))
    if min(oh, ow) < 1:
        raise TraceStop(name, f"Layer `{name}` would produce a {oh}x{ow} map from {h}x{w}: the spatial size reaches "
                        "zero. Use a larger input.")
    return (module.out_channels if isinstance(module, nn.Conv2d) else c, oh, ow)


def _edge_kind(model: nn.Module, dst: str, operand: int) -> ShortcutKind | None:
    """The kind of shortcut an edge belongs to, or None on the main path (the add's second operand is the shortcut)."""
    if ".downsample" not in dst and not (dst.endswith(".add") and operand == 1):
        return None
    return shortcut_kind(model.get_submodule(".".join(dst.split(".")[:2])))


class _Walker:
    """Walks the leaf modules in execution order, turning shapes into rows, blocks and graph edges."""

    def __init__(self, model: ResNet, trace: Trace):
        self.model, self.trace = model, trace

    def step(self, name: str, module: nn.Module, inputs: list[_Flow]) -> _Flow:
        x = inputs[0]
        shape = out_shape(name, module, x.shape)
        if (_attr(module, "stride") or 1) > 1 and x.shape[1:] == (1, 1):
            self.trace.idle_strides.append(name)
        rf, jump = grow_receptive_field(module, max(f.rf for f in inputs), x.jump, x.shape[-1])
        stage, block, path = _location(name, self.model.stage_names)
        row = dict(name=name, stage=stage, block=block, path=path, op=OP_NAMES[type(module)],
                   kernel=_attr(module, "kernel_size"), stride=_attr(module, "stride"),
                   in_shape=tuple(f.shape for f in inputs) if len(inputs) > 1 else x.shape, out_shape=shape,
                   params=sum(p.numel() for p in module.parameters(recurse=False)),
                   macs=layer_macs(module, shape), receptive_field=rf)
        self.trace.rows.append(row)
        self.trace.graph.add_node(name, **row)
        for i, f in enumerate(inputs):
            self.trace.graph.add_edge(f.node, name, shape=f.shape, kind=_edge_kind(self.model, name, i))
        return _Flow(name, shape, rf, jump)

    def close_block(self, name: str, block_in: _Flow, out: _Flow) -> None:
        block = self.model.get_submodule(name)
        convs = [m for m in (block.conv1, block.conv2, getattr(block, "conv3", None)) if m is not None]
        self.trace.blocks.append(Block(
            name=name, stage=name.split(".")[0], type=type(block).__name__, in_shape=block_in.shape,
            out_shape=out.shape, stride=block.stride, shortcut=shortcut_kind(block), option=self.model.cfg.shortcut,
            channels=(convs[0].in_channels, *(c.out_channels for c in convs)), groups=block.conv2.groups,
            params=sum(p.numel() for p in block.parameters())))

    def run(self, flow: _Flow) -> None:
        block, block_in, side = "", None, None
        for name, module in self.model.named_modules():
            if not isinstance(module, LEAF_TYPES) or (isinstance(module, Add) and not self.model.cfg.residual):
                continue  # the plain twin never calls its blocks' Add
            _, where, path = _location(name, self.model.stage_names)
            if where != block:
                if block:
                    self.close_block(block, block_in, flow)
                block, block_in, side = where, flow, flow
            if path == "shortcut":
                side = self.step(name, module, [side])
            elif isinstance(module, Add):
                flow = self.step(name, module, [flow, side])  # F(x) + shortcut(x)
            else:
                flow = self.step(name, module, [flow])
        if block:
            self.close_block(block, block_in, flow)


def _attr(module: nn.Module, attr: str):
    v = getattr(module, attr, None)
    return v[0] if isinstance(v, tuple) else v


@functools.lru_cache(maxsize=32)
def skeleton(cfg: ResNetConfig) -> ResNet:
    """The model's modules on the meta device (shapes, no values): cheap to build, cached, never run."""
    return ResNet(cfg, device="meta").eval()


def trace_shapes(cfg: ResNetConfig, input_shape: tuple[int, int, int] | None = None) -> Trace:
    """Trace shapes, parameters, MACs and receptive fields through ``cfg`` for one image.

    Shapes come from each layer's own formula, walking the modules in execution order: no tensor is
    computed. ``input_shape`` (C, H, W) defaults to the config's. Never raises for a bad config: the
    returned trace has ``error`` and ``failed_layer`` set, with every row traced before the failure.
    """
    trace = Trace(cfg)
    try:
        check_config(cfg)
        model = skeleton(cfg)
    except ConfigError as e:
        trace.error = str(e)  # the configuration itself: no layer was traced
        return trace
    shape = tuple(input_shape or (cfg.in_channels, cfg.input_size, cfg.input_size))
    trace.graph.add_node("input", name="input", op="input", out_shape=shape, stage="stem", block="",
                         path="main", params=0, macs=0)
    try:
        _Walker(model, trace).run(_Flow("input", shape))
    except TraceStop as e:
        trace.error, trace.failed_layer = str(e), e.layer
    return trace


def stage_graph(trace: Trace) -> nx.DiGraph:
    """The graph collapsed to stem, one node per block, and head; edges keep the tensor shapes."""
    g = nx.DiGraph()
    prev, prev_shape = "stem", None
    stem_out = [r for r in trace.rows if r["stage"] == "stem"]
    g.add_node("stem", label="stem", stage="stem", out_shape=stem_out[-1]["out_shape"] if stem_out else None,
               params=sum(r["params"] for r in stem_out))
    prev_shape = g.nodes["stem"]["out_shape"]
    for b in trace.blocks:
        g.add_node(b.name, label=b.name, stage=b.stage, out_shape=b.out_shape, params=b.params, block=b)
        g.add_edge(prev, b.name, shape=prev_shape, kind=None)
        prev, prev_shape = b.name, b.out_shape
    head = [r for r in trace.rows if r["stage"] == "head"]
    if head and not trace.error:
        g.add_node("head", label="avgpool + fc", stage="head", out_shape=head[-1]["out_shape"],
                   params=sum(r["params"] for r in head))
        g.add_edge(prev, "head", shape=prev_shape, kind=None)
    return g
