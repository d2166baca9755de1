"""Shortcut lab: why ``x + F(x)`` needs equal shapes, and the ways to make them equal.

Everything here runs the real modules on a real tensor: the naive addition (and PyTorch's own error),
option A (``models.PadShortcut``), option B (the 1x1 projection ``models.make_shortcut`` builds),
concatenation, the 1x1 convolution seen as a per-pixel matrix, and the bottleneck's costs.
Costs of whole blocks are read on the ``meta`` device, where tensors have shapes but no data.
"""
from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from resviz import models
from resviz.hooks import Hooks
from resviz.lessons.architecture import shortcut_label
from resviz.models import ConfigError, PadShortcut, ResNetConfig
from resviz.trace import Block, conv_macs, fmt_shape, out_shape

DIM_NAMES = ("batch", "channels", "height", "width")
MAX_CHANNELS = 2048  # the widest ResNet stage (ResNet-50..152 layer4)
MAX_SIDE = 256  # pixels; larger maps make the lab slow for a whole class on one server
MAX_LAB_MACS = 2_000_000_000  # one 3x3 conv of F(x); keeps each rerun under about a second on a CPU
MAX_SHOWN = 48  # rows/columns of a weight matrix drawn as a heatmap
_LAB_CFG = ResNetConfig(shortcut="A")  # only the shortcut option matters to make_shortcut


class FixKind(enum.Enum):
    """A way to give x the shape of F(x). The value is the name the page shows."""

    IDENTITY = "Identity (no fix)"
    ZERO_PAD = "Option A: zero-pad"
    PROJECTION = "Option B: 1x1 conv + BN"
    CONCAT = "Concatenate channels"


@dataclass(frozen=True)
class Mismatch:
    """One dimension where F(x) and x differ."""

    dim: int
    name: str  # "channels", "height", ...
    fx: int
    x: int


@dataclass(frozen=True)
class Addition:
    """``F(x) + x`` tried for real: PyTorch's error (if any) and every dimension that differs."""

    fx_shape: tuple[int, ...]  # (B, C, H, W), as PyTorch sees them
    x_shape: tuple[int, ...]
    mismatches: tuple[Mismatch, ...]
    error: str | None = None  # PyTorch's own message, first line
    torch_dim: int | None = None  # the dimension PyTorch's message names
    result_shape: tuple[int, ...] | None = None
    broadcast: bool = False  # it ran only because a size-1 dimension was copied: not x + F(x)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class FixResult:
    """One fix run on x: the shortcut's output, the sum (or concatenation), and what the fix costs."""

    fix: FixKind
    how: str  # what it does, in words
    shortcut_shape: tuple[int, ...] | None  # (C, H, W)
    result_shape: tuple[int, ...] | None  # (C, H, W)
    works: bool
    params: int
    macs: int
    error: str | None


@dataclass(frozen=True)
class ConvCost:
    """One convolution run inside a module: its shapes (C, H, W), parameters and multiply-accumulates."""

    layer: str
    kernel: str  # "3x3"
    stride: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass(frozen=True)
class NextLayer:
    """The 3x3 conv after the block (back to C_out channels), fed the sum or the concatenation."""

    in_channels: int
    params: int
    macs: int


@dataclass(frozen=True)
class LabResult:
    """What ``compare_fixes`` measured on one tensor x."""

    x_shape: tuple[int, ...]  # (C, H, W)
    fx_shape: tuple[int, ...]  # (C, H, W)
    branch_params: int
    branch_macs: int
    naive: Addition
    fixes: tuple[FixResult, ...]
    after_add: NextLayer
    after_cat: NextLayer

    def fix(self, kind: FixKind) -> FixResult:
        return next(f for f in self.fixes if f.fix is kind)


def check_lab_input(c_in: int, c_out: int, stride: int, height: int, width: int) -> None:
    """Raise ConfigError, in plain words, for inputs the lab cannot run (PyTorch's limits and the server's)."""
    if c_in < 1 or c_out < 1:
        raise ConfigError("A tensor needs at least one channel: set input and output channels to 1 or more.")
    if height < 1 or width < 1:
        raise ConfigError("The image needs at least one pixel: set height and width to 1 or more.")
    if stride < 1:
        raise ConfigError("Stride must be at least 1 (1 keeps every pixel, 2 keeps every other one).")
    if max(c_in, c_out) > MAX_CHANNELS or max(height, width) > MAX_SIDE:
        raise ConfigError(f"The lab allows at most {MAX_CHANNELS} channels and {MAX_SIDE} pixels a side.")
    macs = c_in * c_out * 9 * (-(-height // stride)) * (-(-width // stride))
    if macs > MAX_LAB_MACS:
        raise ConfigError(f"F(x) would need {macs / 1e9:.1f} billion multiply-accumulates, too slow for a shared "
                          f"server; use fewer channels or a smaller image.")


def run_costed(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int, list[ConvCost]]:
    """Run ``module`` on ``x``; return (output, parameter count, one ConvCost per conv, in running order)."""
    names = {m: n for n, m in module.named_modules()}
    rows = []

    def record(conv, inputs, out):
        rows.append(ConvCost(names[conv] or "conv", f"{conv.kernel_size[0]}x{conv.kernel_size[1]}", conv.stride[0],
                             tuple(inputs[0].shape[1:]), tuple(out.shape[1:]), conv.weight.numel(),
                             conv_macs(conv, tuple(out.shape[1:]))))

    with Hooks() as hooks, torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                hooks.forward(m, record)
        out = module(x)
    return out, models.count_params(module), rows


def _round_(module: nn.Module) -> nn.Module:
    """Round conv weights to about 2 significant digits so a student can redo a product by hand."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                typical = m.weight.abs().mean().clamp_min(1e-6)
                decimals = max(2, 1 - math.floor(math.log10(typical)))  # 0.3 -> 2 decimals, 0.02 -> 3
                m.weight.copy_(m.weight.round(decimals=decimals))
    return module


def lab_modules(c_in: int, c_out: int, stride: int, seed: int = 0, device="cpu",
                parts=("branch", "B")) -> dict[str, nn.Module]:
    """The lab's modules, same weights for the same seed: F(x) ("branch") and option B (with its 1x1 conv)."""
    makers = {"branch": lambda: nn.Sequential(models.conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out)),
              "B": lambda: models.make_shortcut(replace(_LAB_CFG, shortcut="C"), c_in, c_out, stride)}
    out = {}
    for name in parts:
        with models.seeded(seed * 10 + list(makers).index(name)):  # each module its own stream
            module = makers[name]().eval()  # BN uses its running statistics: one image is enough
            out[name] = (_round_(module) if name == "B" else module).to(device)  # B's weights are shown
    if "B" in out:
        out["conv1x1"] = out["B"][0]
    return out


def lab_input(c_in: int, height: int, width: int, seed: int = 0, device="cpu") -> torch.Tensor:
    """The lab's input x: (1, C_in, H, W), random values rounded to 1 decimal."""
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn(1, c_in, height, width, generator=gen).round(decimals=1).to(device)


def try_add(fx: torch.Tensor, x: torch.Tensor) -> Addition:
    """Attempt ``F(x) + x`` for real; report PyTorch's error and every dimension that differs."""
    mismatches = tuple(Mismatch(i, DIM_NAMES[i] if i < len(DIM_NAMES) else str(i), a, b)
                       for i, (a, b) in enumerate(zip(fx.shape, x.shape)) if a != b)
    shapes = dict(fx_shape=tuple(fx.shape), x_shape=tuple(x.shape), mismatches=mismatches)
    try:
        result = fx + x
    except RuntimeError as e:
        error = str(e).splitlines()[0]
        m = re.search(r"dimension (-?\d+)", error)
        return Addition(**shapes, error=error, torch_dim=int(m.group(1)) % fx.dim() if m else None)
    return Addition(**shapes, result_shape=tuple(result.shape), broadcast=bool(mismatches))


def _fix_row(fix: FixKind, how: str, shortcut_out, fx, params: int, macs: int) -> FixResult:
    if fix is FixKind.CONCAT:
        result, error = tuple(torch.cat([fx, shortcut_out], dim=1).shape), None
    else:
        summed = try_add(fx, shortcut_out)
        result = summed.result_shape
        error = summed.error or ("PyTorch broadcast a size-1 dimension: it ran, but it is not x + F(x)"
                                 if summed.broadcast else None)
    return FixResult(fix, how, tuple(shortcut_out.shape[1:]), result and result[1:], error is None, params, macs,
                     error)


def _every(stride: int) -> str:
    return "keep every pixel" if stride == 1 else f"keep one pixel in {stride} along each axis"


def compare_fixes(c_in: int, c_out: int, stride: int, height: int, width: int,
                  seed: int = 0, device="cpu") -> LabResult:
    """Run F(x), the naive identity addition and every fix on one real tensor; shapes, params, MACs."""
    check_lab_input(c_in, c_out, stride, height, width)
    mods = lab_modules(c_in, c_out, stride, seed, device)
    x = lab_input(c_in, height, width, seed, device)
    fx, f_params, f_rows = run_costed(mods["branch"], x)
    rows = [_fix_row(FixKind.IDENTITY, "add x as it is", x, fx, 0, 0)]
    try:
        a_out, a_params, _ = run_costed(models.make_shortcut(_LAB_CFG, c_in, c_out, stride) or nn.Identity(), x)
        rows.append(_fix_row(FixKind.ZERO_PAD, f"{_every(stride)}, append {c_out - c_in} channels of zeros",
                             a_out, fx, a_params, 0))
    except ConfigError as e:
        rows.append(FixResult(FixKind.ZERO_PAD, str(e), None, None, False, 0, 0, str(e)))
    b_out, b_params, b_rows = run_costed(mods["B"], x)
    rows.append(_fix_row(FixKind.PROJECTION, f"1x1 conv {c_in}->{c_out} with stride {stride}, then batch norm",
                         b_out, fx, b_params, sum(r.macs for r in b_rows)))
    sub, _, _ = run_costed(PadShortcut(c_in, c_in, stride), x)  # subsample only, so H and W match
    rows.append(_fix_row(FixKind.CONCAT, f"{_every(stride)}, stack x's {c_in} channels after F(x)'s {c_out}",
                         sub, fx, 0, 0))
    hw = tuple(fx.shape[2:])
    return LabResult(tuple(x.shape[1:]), tuple(fx.shape[1:]), f_params, sum(r.macs for r in f_rows), try_add(fx, x),
                     tuple(rows), next_layer(c_out, c_out, hw), next_layer(c_out + c_in, c_out, hw))


def next_layer(in_channels: int, c_out: int, hw: tuple[int, int]) -> NextLayer:
    """The next 3x3 conv (``in_channels`` -> ``c_out``) on an ``hw`` map: its parameters and MACs."""
    with torch.device("meta"):
        conv = models.conv3x3(in_channels, c_out)
    return NextLayer(in_channels, models.count_params(conv), conv_cost("conv", conv, (in_channels, *hw)).macs)


def conv_cost(layer: str, conv: nn.Conv2d, in_shape: tuple[int, int, int]) -> ConvCost:
    """What ``conv`` costs on an input of ``in_shape`` (C, H, W), its output shape by the layer's own formula.

    Nothing runs: on the meta device, a first conv imports sympy and a first ReLU or addition torch._dynamo,
    seconds of a cold server's time while a class waits.
    """
    out = out_shape(layer, conv, in_shape)
    return ConvCost(layer, f"{conv.kernel_size[0]}x{conv.kernel_size[1]}", conv.stride[0], tuple(in_shape), out,
                    conv.weight.numel(), conv_macs(conv, out))


def kept_pixels(stride: int, height: int, width: int) -> np.ndarray:
    """(H, W) bool: the input pixels a stride-s 1x1 conv reads, found by backpropagating through one."""
    conv = models.conv1x1(1, 1, stride)
    nn.init.ones_(conv.weight)
    x = torch.zeros(1, 1, height, width, requires_grad=True)
    conv(x).sum().backward()
    return (x.grad[0, 0] != 0).numpy()


@dataclass(frozen=True)
class PixelProduct:
    """Option B's 1x1 conv at one output pixel: y = W x, by hand and by the convolution."""

    weight: np.ndarray  # (C_out, C_in), at most MAX_SHOWN x MAX_SHOWN of it
    weight_shape: tuple[int, int]  # the whole matrix's
    x_vec: np.ndarray  # (C_in,): the input pixel's channels
    y_by_hand: np.ndarray  # W @ x
    y_conv: np.ndarray  # what the conv computed at that pixel
    y0_text: str  # output channel 0 written out as a sum
    in_pixel: tuple[int, int]
    out_pixel: tuple[int, int]
    out_hw: tuple[int, int]
    kept: np.ndarray  # (H, W) bool: the input pixels the stride reads
    params: int
    macs: int


def pixel_product(c_in: int, c_out: int, stride: int, height: int, width: int, row: int = 0, col: int = 0,
                  seed: int = 0, device="cpu") -> PixelProduct:
    """The 1x1 conv of option B at one output pixel: weight matrix W, input vector x, W @ x vs the conv's output."""
    check_lab_input(c_in, c_out, stride, height, width)
    conv = lab_modules(c_in, c_out, stride, seed, device, parts=("B",))["conv1x1"]
    x = lab_input(c_in, height, width, seed, device)
    with torch.no_grad():
        y = conv(x)  # (1, C_out, H', W')
    out_h, out_w = y.shape[2:]
    if not (0 <= row < out_h and 0 <= col < out_w):
        raise ConfigError(f"Pick an output pixel inside the {out_h}x{out_w} output.")
    w = conv.weight.detach()[:, :, 0, 0].double().cpu().numpy()  # (C_out, C_in): the whole 1x1 conv
    in_row, in_col = row * stride, col * stride  # the one input pixel this output pixel reads
    x_vec = x[0, :, in_row, in_col].double().cpu().numpy()
    return PixelProduct(w[:MAX_SHOWN, :MAX_SHOWN], w.shape, x_vec, w @ x_vec, y[0, :, row, col].double().cpu().numpy(),
                        dot_text(w[0], x_vec), (in_row, in_col), (row, col), (int(out_h), int(out_w)),
                        kept_pixels(stride, height, width), conv.weight.numel(), conv_macs(conv, tuple(y.shape[1:])))


def dot_text(w_row: np.ndarray, x_vec: np.ndarray, max_terms: int = 4) -> str:
    """'0.12×0.5 + (−0.3)×1.2 + … = 0.37': one output channel as the sum it is."""
    def num(v):
        return f"({v:g})" if v < 0 else f"{v:g}"
    terms = [f"{num(round(float(a), 4) + 0.0)}×{num(round(float(b), 4) + 0.0)}" for a, b in zip(w_row, x_vec)]
    shown = " + ".join(terms[:max_terms])
    if len(terms) > max_terms:
        shown += f" + … ({len(terms) - max_terms} more)"
    return f"{shown} = {float(w_row @ x_vec):.4f}"


@dataclass(frozen=True)
class BlockCost:
    """One block design's main path F(x): each conv's cost, and the totals."""

    name: str
    short: str  # for a chart axis (with <br> breaks)
    rows: tuple[ConvCost, ...]
    params: int
    macs: int
    in_channels: int


def bottleneck_costs(channels: int = 256, stride: int = 1, size: int = 56) -> tuple[BlockCost, ...]:
    """Per-conv shapes, params and MACs of a bottleneck (stride on the 1x1 or the 3x3) vs two 3x3 convs."""
    if channels < 4 or channels % 4:
        raise ConfigError("A bottleneck needs a channel count divisible by 4 (it reduces to a quarter).")
    if size < stride or stride < 1:
        raise ConfigError(f"Stride {stride} does not fit a {size}x{size} input.")
    planes = channels // 4
    paper, v15 = replace(_LAB_CFG, stride_in_1x1=True), replace(_LAB_CFG, stride_in_1x1=False)
    designs = [  # (name, short label for a chart, block class, config, input channels, planes)
        ("Bottleneck, stride on the first 1x1 (paper)", "bottleneck<br>stride on 1x1<br>(paper)",
         models.Bottleneck, paper, channels, planes),
        ("Bottleneck, stride on the 3x3 (torchvision v1.5)", "bottleneck<br>stride on 3x3<br>(v1.5)",
         models.Bottleneck, v15, channels, planes),
        (f"Two 3x3 convs at {channels} channels", f"two 3x3<br>at {channels} ch",
         models.BasicBlock, _LAB_CFG, channels, channels),
        (f"Two 3x3 convs at {planes} channels (paper Fig. 5, left)", f"two 3x3<br>at {planes} ch<br>(Fig. 5)",
         models.BasicBlock, _LAB_CFG, planes, planes),
    ]
    out = []
    for name, short, block_cls, cfg, in_ch, width in designs:
        with torch.device("meta"):
            block = block_cls(cfg, in_ch, width, stride)
        path = main_path_costs(block, (in_ch, size, size))
        out.append(BlockCost(name, short, path, sum(r.params for r in path), sum(r.macs for r in path), in_ch))
    return tuple(out)


def main_path_costs(block: nn.Module, in_shape: tuple[int, int, int]) -> tuple[ConvCost, ...]:
    """The convs of a block's main path F(x) (the projection shortcut left out), each fed the last one's output:
    batch norm, ReLU and the addition change no shape and hold no conv."""
    rows, shape = [], tuple(in_shape)
    for layer, conv in block.named_children():
        if isinstance(conv, nn.Conv2d):  # conv1, conv2 (, conv3) in the order they run
            rows.append(conv_cost(layer, conv, shape))
            shape = rows[-1].out_shape
    return tuple(rows)


def fix_table(lab: LabResult) -> list[dict]:
    """``compare_fixes`` rows ready to show: one per fix, shapes as C×H×W."""
    return [{"fix": r.fix.value, "works?": "yes" if r.works else "no", "result": fmt_shape(r.result_shape),
             "parameters": r.params, "MACs": r.macs, "shortcut output": fmt_shape(r.shortcut_shape),
             "what it does": r.how} for r in lab.fixes]  # the long text last: the numbers never scroll away


def mismatch_text(naive: Addition) -> str:
    """One sentence: which dimensions differ, and which one PyTorch's message names."""
    if not naive.mismatches:
        return "The shapes are equal, so the identity shortcut works: nothing to fix."
    diffs = ", ".join(f"**{m.name}** (F(x) has {m.fx}, x has {m.x})" for m in naive.mismatches)
    if naive.broadcast:
        return (f"These differ: {diffs}. PyTorch did not complain: it *broadcast* the size-1 dimension, repeating "
                f"it to give {fmt_shape(naive.result_shape[1:])}. The sum ran, but it is not x + F(x): "
                "a real block still needs a fix.")
    if naive.torch_dim is None:
        return f"These differ: {diffs}."
    named = f" PyTorch's message names dimension {naive.torch_dim} ({DIM_NAMES[naive.torch_dim]})"
    if len(naive.mismatches) > 1:
        named += " only: it compares shapes from the last dimension backwards and stops at the first mismatch"
    return f"These differ: {diffs}.{named}."


def block_label(b: Block) -> str:
    """'layer2.0 · 16→32 channels · stride 2 · 32×32 input · shortcut zero-pad, stride 2'."""
    (c_in, h, w), c_out = b.in_shape, b.out_shape[0]
    return f"{b.name} · {c_in}→{c_out} channels · stride {b.stride} · {h}×{w} input · shortcut {shortcut_label(b)}"


def block_inputs(b: Block) -> tuple[int, int, int, int, int]:
    """The lab's inputs that reproduce block ``b``: (C_in, C_out, stride, height, width)."""
    (c_in, h, w), c_out = b.in_shape, b.out_shape[0]
    return c_in, c_out, b.stride, h, w


def layer_table(rows: tuple[ConvCost, ...]) -> list[dict]:
    """``bottleneck_costs`` rows ready to show, one per conv."""
    return [{"layer": r.layer, "kernel": r.kernel, "stride": r.stride, "input": fmt_shape(r.in_shape),
             "output": fmt_shape(r.out_shape), "parameters": r.params, "MACs": r.macs} for r in rows]


def fixes_text(lab, c_out: int) -> str:
    """What each fix costs, in words, with the next layer's price of concatenation (the numbers of ``lab``)."""
    cat, add = lab.after_cat, lab.after_add
    return (f"**Option A** costs nothing but can only *add* channels. **Option B** learns a projection: "
            f"{lab.fix(FixKind.PROJECTION).params:,} parameters. **Concatenation** also costs nothing here, but the "
            f"next layer then sees {cat.in_channels} channels instead of {add.in_channels}: a 3x3 conv back to "
            f"{c_out} channels needs {cat.params:,} parameters and {cat.macs:,} MACs instead of {add.params:,} and "
            f"{add.macs:,}, and it grows again at every block (that is DenseNet's design). MACs = output elements × "
            f"input channels × kernel height × kernel width.")


def pixel_text(p, c_in: int, c_out: int) -> str:
    """Output channel 0 of the picked pixel worked by hand, against the convolution's own number."""
    return (f"Output channel 0 by hand: y₀ = {p.y0_text}; the convolution computed **{p.y_conv[0]:.4f}**. "
            f"Weights: {p.params:,} ({c_out} × {c_in}); MACs: {p.macs:,} ({p.out_hw[0]}×{p.out_hw[1]} pixels × "
            f"{c_out} × {c_in}).")


STRIDE_PLACEMENT = (
    "The paper (He et al. 2016) puts the stride on the first 1x1, which then simply drops 3 of every 4 pixels "
    "before the 3x3 sees them (fewer MACs). torchvision's \"v1.5\" moves it to the 3x3, which looks at every "
    "pixel: more MACs, about 0.5% better top-1 on ImageNet (NVIDIA's ResNet-50 v1.5 notes). Same parameters either "
    "way: a stride changes where a kernel is applied, not its size.")
