"""Shortcut lab: why ``x + F(x)`` needs equal shapes, and the ways to make them equal.

Everything here runs the real modules on a real tensor: the naive addition (and PyTorch's own error),
option A (``models.PadShortcut``), option B (the 1x1 projection ``models.make_shortcut`` builds),
concatenation, the 1x1 convolution seen as a per-pixel matrix, and the bottleneck's costs.
Shapes of whole networks are read on the ``meta`` device, where tensors have shapes but no data.
"""
from __future__ import annotations

import math
import re
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from resviz import models
from resviz.models import ConfigError, PadShortcut, ResNetConfig

DIM_NAMES = ("batch", "channels", "height", "width")
MAX_CHANNELS = 2048  # the widest ResNet stage (ResNet-50..152 layer4)
MAX_SIDE = 256  # pixels; larger maps make the lab slow for a whole class on one server
MAX_LAB_MACS = 2_000_000_000  # one 3x3 conv of F(x); keeps each rerun under about a second on a CPU
MAX_SHOWN = 48  # rows/columns of a weight matrix drawn as a heatmap
_LAB_CFG = ResNetConfig(shortcut="A")  # only the shortcut option matters to make_shortcut


def check_lab_input(c_in: int, c_out: int, stride: int, height: int, width: int) -> None:
    """Raise ConfigError, in plain words, for inputs the lab cannot run."""
    if c_in < 1 or c_out < 1:
        raise ConfigError("A tensor needs at least one channel: set input and output channels to 1 or more.")
    if height < 1 or width < 1:
        raise ConfigError("The image needs at least one pixel: set height and width to 1 or more.")
    if stride < 1:
        raise ConfigError("Stride must be at least 1 (1 keeps every pixel, 2 keeps every other one).")
    if stride > min(height, width):
        raise ConfigError(f"Stride {stride} is larger than the {height}x{width} image: the convolution would "
                          f"step over the whole image and keep only its top-left pixel. Use a stride of at most "
                          f"{min(height, width)}.")
    if max(c_in, c_out) > MAX_CHANNELS or max(height, width) > MAX_SIDE:
        raise ConfigError(f"The lab allows at most {MAX_CHANNELS} channels and {MAX_SIDE} pixels a side.")
    macs = c_in * c_out * 9 * (-(-height // stride)) * (-(-width // stride))
    if macs > MAX_LAB_MACS:
        raise ConfigError(f"F(x) would need {macs / 1e9:.1f} billion multiply-accumulates, too slow for a shared "
                          f"server; use fewer channels or a smaller image.")


def conv_macs(conv: nn.Conv2d, out_shape) -> int:
    """Multiply-accumulates of one conv for one image: output elements x (C_in/groups) x kh x kw."""
    kh, kw = conv.kernel_size
    return int(torch.Size(out_shape[-3:]).numel()) * (conv.in_channels // conv.groups) * kh * kw


def run_costed(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int, list[dict]]:
    """Run ``module`` on ``x``; return (output, parameter count, one row per conv with its MACs)."""
    rows = []

    def hook(mod, inp, out):
        rows.append({"conv": mod, "kernel": f"{mod.kernel_size[0]}x{mod.kernel_size[1]}", "stride": mod.stride[0],
                     "in_shape": tuple(inp[0].shape[1:]), "out_shape": tuple(out.shape[1:]),
                     "params": mod.weight.numel(), "macs": conv_macs(mod, out.shape)})

    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.no_grad():
            out = module(x)
    finally:
        for h in handles:
            h.remove()
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


def try_add(fx: torch.Tensor, x: torch.Tensor) -> dict:
    """Attempt ``F(x) + x`` for real; report PyTorch's error and every dimension that differs."""
    mismatches = [{"dim": i, "name": DIM_NAMES[i] if i < len(DIM_NAMES) else str(i), "F(x)": a, "x": b}
                  for i, (a, b) in enumerate(zip(fx.shape, x.shape)) if a != b]
    out = {"fx_shape": tuple(fx.shape), "x_shape": tuple(x.shape), "mismatches": mismatches,
           "ok": False, "error": None, "torch_dim": None, "torch_dim_name": None, "result_shape": None,
           "broadcast": False}
    try:
        result = fx + x
    except RuntimeError as e:
        out["error"] = str(e).splitlines()[0]
        m = re.search(r"dimension (-?\d+)", out["error"])
        if m:
            dim = int(m.group(1)) % fx.dim()
            out["torch_dim"], out["torch_dim_name"] = dim, DIM_NAMES[dim]
        return out
    out["ok"], out["result_shape"] = True, tuple(result.shape)
    out["broadcast"] = bool(mismatches)  # a size-1 dimension was silently copied: it ran, but is not x + F(x)
    return out


def _fix_row(name, how, shortcut_out, fx, params, macs, combine="add") -> dict:
    joined = torch.cat([fx, shortcut_out], dim=1) if combine == "cat" else None
    summed = try_add(fx, shortcut_out) if combine == "add" else None
    ok = joined is not None or (summed["ok"] and not summed["broadcast"])
    result = tuple(joined.shape) if joined is not None else summed["result_shape"]
    error = None if ok else summed["error"] or "PyTorch broadcast a size-1 dimension: it ran, but it is not x + F(x)"
    return {"fix": name, "how": how, "shortcut_shape": tuple(shortcut_out.shape), "result_shape": result,
            "works": ok, "params": params, "macs": macs, "error": error}


def _every(stride: int) -> str:
    return "keep every pixel" if stride == 1 else f"keep one pixel in {stride} along each axis"


def compare_fixes(c_in: int, c_out: int, stride: int, height: int, width: int,
                  seed: int = 0, device="cpu") -> dict:
    """Run F(x), the naive identity addition and every fix on one real tensor; shapes, params, MACs."""
    check_lab_input(c_in, c_out, stride, height, width)
    mods = lab_modules(c_in, c_out, stride, seed, device)
    x = lab_input(c_in, height, width, seed, device)
    fx, f_params, f_rows = run_costed(mods["branch"], x)
    rows = [_fix_row("Identity (no fix)", "add x as it is", x, fx, 0, 0)]
    try:
        opt_a = models.make_shortcut(_LAB_CFG, c_in, c_out, stride) or nn.Identity()
        a_out, a_params, _ = run_costed(opt_a, x)
        rows.append(_fix_row("Option A: zero-pad", f"{_every(stride)}, append {c_out - c_in} channels "
                             "of zeros", a_out, fx, a_params, 0))
    except ConfigError as e:
        rows.append({"fix": "Option A: zero-pad", "how": str(e), "shortcut_shape": None, "result_shape": None,
                     "works": False, "params": 0, "macs": 0, "error": str(e)})
    b_out, b_params, b_rows = run_costed(mods["B"], x)
    rows.append(_fix_row("Option B: 1x1 conv + BN", f"1x1 conv {c_in}->{c_out} with stride {stride}, then batch "
                         "norm", b_out, fx, b_params, sum(r["macs"] for r in b_rows)))
    sub, _, _ = run_costed(PadShortcut(c_in, c_in, stride), x)  # subsample only, so H and W match
    rows.append(_fix_row("Concatenate channels", f"{_every(stride)}, stack x's {c_in} channels after F(x)'s "
                         f"{c_out}", sub, fx, 0, 0, combine="cat"))
    return {"x_shape": tuple(x.shape), "fx_shape": tuple(fx.shape), "branch_params": f_params,
            "branch_macs": sum(r["macs"] for r in f_rows), "naive": try_add(fx, x), "fixes": rows,
            "next_layer": next_layer_costs(c_in, c_out, tuple(fx.shape[2:]))}


def next_layer_costs(c_in: int, c_out: int, hw: tuple[int, int]) -> dict:
    """The next 3x3 conv (to C_out channels) after a sum (C_out in) vs after a concatenation (C_out + C_in in)."""
    out = {}
    for key, ch in (("after_add", c_out), ("after_cat", c_out + c_in)):
        with torch.device("meta"):
            conv = models.conv3x3(ch, c_out)
        _, params, rows = run_costed(conv, torch.empty(1, ch, *hw, device="meta"))
        out[key] = {"in_channels": ch, "params": params, "macs": rows[0]["macs"]}
    return out


def kept_pixels(stride: int, height: int, width: int) -> np.ndarray:
    """(H, W) bool: the input pixels a stride-s 1x1 conv reads, found by backpropagating through one."""
    conv = models.conv1x1(1, 1, stride)
    nn.init.ones_(conv.weight)
    x = torch.zeros(1, 1, height, width, requires_grad=True)
    conv(x).sum().backward()
    return (x.grad[0, 0] != 0).numpy()


def pixel_product(c_in: int, c_out: int, stride: int, height: int, width: int, row: int = 0, col: int = 0,
                  seed: int = 0, device="cpu") -> dict:
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
    return {"weight": w[:MAX_SHOWN, :MAX_SHOWN], "weight_shape": w.shape, "x_vec": x_vec,
            "y_by_hand": w @ x_vec, "y0_text": dot_text(w[0], x_vec), "y_conv": y[0, :, row, col].double().cpu().numpy(),
            "in_pixel": (in_row, in_col), "out_pixel": (row, col), "out_hw": (int(out_h), int(out_w)),
            "kept": kept_pixels(stride, height, width), "params": conv.weight.numel(),
            "macs": conv_macs(conv, y.shape)}


def dot_text(w_row: np.ndarray, x_vec: np.ndarray, max_terms: int = 4) -> str:
    """'0.12×0.5 + (−0.3)×1.2 + … = 0.37': one output channel as the sum it is."""
    def num(v):
        return f"({v:g})" if v < 0 else f"{v:g}"
    terms = [f"{num(round(float(a), 4) + 0.0)}×{num(round(float(b), 4) + 0.0)}" for a, b in zip(w_row, x_vec)]
    shown = " + ".join(terms[:max_terms])
    if len(terms) > max_terms:
        shown += f" + … ({len(terms) - max_terms} more)"
    return f"{shown} = {float(w_row @ x_vec):.4f}"


def bottleneck_costs(channels: int = 256, stride: int = 1, size: int = 56) -> dict:
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
    out = {}
    for name, short, block_cls, cfg, in_ch, width in designs:
        with torch.device("meta"):
            block = block_cls(cfg, in_ch, width, stride)
        _, _, rows = run_costed(block, torch.empty(1, in_ch, size, size, device="meta"))
        names = {m: n for n, m in block.named_modules()}
        rows = [{"layer": names[r.pop("conv")], **r} for r in rows]
        path = [r for r in rows if not r["layer"].startswith("downsample")]  # the main path F(x) only
        out[name] = {"short": short, "rows": path, "params": sum(r["params"] for r in path),
                     "macs": sum(r["macs"] for r in path), "in_channels": in_ch}
    return out


def model_blocks(cfg: ResNetConfig) -> list[dict]:
    """Every residual block of ``cfg``: input channels, output channels, stride, input size, shortcut kind."""
    models.check_config(cfg)
    with torch.device("meta"):
        model = models.build_model(cfg)
    names = {m: n for n, m in model.named_modules()}
    rows = []

    def pre_hook(block, args):
        last = block.conv3 if isinstance(block, models.Bottleneck) else block.conv2
        sc = block.downsample
        kind = ("none (plain twin)" if not block.residual else "identity" if sc is None
                else "A: zero-pad" if isinstance(sc, PadShortcut) else "B: 1x1 conv + BN")
        rows.append({"name": names[block], "block": type(block).__name__, "in_ch": block.conv1.in_channels,
                     "out_ch": last.out_channels, "stride": block.stride, "height": args[0].shape[2],
                     "width": args[0].shape[3], "shortcut": kind})

    handles = [b.register_forward_pre_hook(pre_hook) for b in model.blocks()]
    try:
        model(torch.empty(1, cfg.in_channels, cfg.input_size, cfg.input_size, device="meta"))
    except RuntimeError as e:
        raise ConfigError(f"The {cfg.input_size}x{cfg.input_size} input is too small for this network "
                          f"({str(e).splitlines()[0]}).") from e
    finally:
        for h in handles:
            h.remove()
    return rows


def fmt_shape(shape) -> str:
    """(1, 16, 8, 8) -> '16×8×8' (channels × height × width; the batch of one is left out)."""
    return "—" if shape is None else "×".join(str(d) for d in shape[-3:])


def fix_table(lab: dict) -> list[dict]:
    """``compare_fixes`` rows ready to show: one per fix, shapes as C×H×W."""
    return [{"fix": r["fix"], "what it does": r["how"], "shortcut output": fmt_shape(r["shortcut_shape"]),
             "result": fmt_shape(r["result_shape"]), "works?": "yes" if r["works"] else "no",
             "parameters": r["params"], "MACs": r["macs"]} for r in lab["fixes"]]


def mismatch_text(naive: dict) -> str:
    """One sentence: which dimensions differ, and which one PyTorch's message names."""
    if not naive["mismatches"]:
        return "The shapes are equal, so the identity shortcut works: nothing to fix."
    diffs = ", ".join(f"**{m['name']}** (F(x) has {m['F(x)']}, x has {m['x']})" for m in naive["mismatches"])
    if naive["broadcast"]:
        return (f"These differ: {diffs}. PyTorch did not complain: it *broadcast* the size-1 dimension, repeating "
                f"it to give {fmt_shape(naive['result_shape'])}. The sum ran, but it is not x + F(x): "
                "a real block still needs a fix.")
    if naive["torch_dim"] is None:
        return f"These differ: {diffs}."
    named = f" PyTorch's message names dimension {naive['torch_dim']} ({naive['torch_dim_name']})"
    if len(naive["mismatches"]) > 1:
        named += " only: it compares shapes from the last dimension backwards and stops at the first mismatch"
    return f"These differ: {diffs}.{named}."


def block_label(b: dict) -> str:
    """'layer2.0 · 16→32 channels · stride 2 · 32×32 input · shortcut A: zero-pad'."""
    return (f"{b['name']} · {b['in_ch']}→{b['out_ch']} channels · stride {b['stride']} · "
            f"{b['height']}×{b['width']} input · shortcut {b['shortcut']}")


def layer_table(rows: list[dict]) -> list[dict]:
    """``bottleneck_costs`` rows ready to show, one per conv."""
    return [{"layer": r["layer"], "kernel": r["kernel"], "stride": r["stride"], "input": fmt_shape(r["in_shape"]),
             "output": fmt_shape(r["out_shape"]), "parameters": r["params"], "MACs": r["macs"]} for r in rows]
