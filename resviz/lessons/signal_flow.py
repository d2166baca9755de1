"""Activation and gradient statistics per layer, for a ResNet and its plain twin.

Statistics are taken with forward hooks and tensor (gradient) hooks, so they work on any ``nn.Module``,
torchvision's own ResNets included (their blocks modify tensors in place: every forward statistic is reduced
inside the hook, before the next in-place op, and a tensor hook sees the gradient of the value it was
registered on). Hooks are always removed. Reductions stay on the model's device; one stack and one copy to
the CPU happen at the end, so collecting costs a few percent of a forward+backward pass.

A *layer* here is a weighted layer on the main path (the convs and the fc layer the paper counts in "ResNet-20");
projection shortcuts are left out so that a ResNet and its plain twin line up layer for layer.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resviz.inputs import limits
from resviz import models

INITS = {  # scheme -> what it does, in words for the page
    "default": "PyTorch's layer defaults (reset_parameters: Kaiming-uniform with a=sqrt(5), BN weight 1)",
    "kaiming": "Kaiming-normal convs, fan-out (He et al. 2015; torchvision's and resviz's default)",
    "xavier": "Xavier/Glorot-normal convs and fc (Glorot & Bengio 2010)",
    "zero_last_bn": "Kaiming, plus the last BN of each block set to zero, so each block starts as the identity "
                    "(Goyal et al. 2017); without BN its last conv is zeroed instead",
}
COLUMNS = ("act_sum", "act_l2", "grad_norm", "weight_grad_norm", "resp_sum", "resp_l2")  # one row per layer
VANISH, EXPLODE = 1e-2, 1e2  # a norm that changes more than 100x across the net has vanished / exploded


# --- inputs ------------------------------------------------------------------------------------------------


def sample_batch(cfg: models.ResNetConfig, batch: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random batch for ``cfg``: standard-normal images (B, C, S, S) and labels, drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=g)
    return x, y


def image_batch(data: bytes, cfg: models.ResNetConfig, seed: int = 0,
                max_bytes: int = limits.mb(limits.IMAGE_MB)) -> tuple[torch.Tensor, torch.Tensor]:
    """An uploaded picture as a batch of one, resized to the model's input; its label is drawn from ``seed``."""
    from resviz.inputs import images  # the shared safe loader: size, format and pixel count checked before decoding

    if cfg.in_channels not in (1, 3):
        raise models.ConfigError(f"A photo has 3 colour channels; this model expects {cfg.in_channels}.")
    img = images.load_image(data, max_bytes=max_bytes)
    steps = images.preprocess_steps(img, images.preprocess_for(cfg.input_size, imagenet=cfg.stem == "imagenet"))
    x = images.to_tensor(steps)  # (1, 3, S, S), normalized
    if cfg.in_channels == 1:
        x = x.mean(1, keepdim=True)  # (1, 1, S, S) grey
    y = torch.randint(0, cfg.num_classes, (1,), generator=torch.Generator().manual_seed(seed))
    return x, y


# --- initialisation ----------------------------------------------------------------------------------------


def _last_norm_and_conv(block: nn.Module) -> tuple[nn.Module | None, nn.Module | None]:
    """The last BN and conv of a residual branch (bn3/conv3 in a bottleneck, bn2/conv2 in a basic block)."""
    for i in (3, 2):
        if hasattr(block, f"conv{i}"):
            return getattr(block, f"bn{i}", None), getattr(block, f"conv{i}")
    return None, None


def apply_init(model: nn.Module, scheme: str, seed: int = 0) -> nn.Module:
    """Re-initialise ``model`` in place with ``scheme`` (one of INITS), drawing from ``seed``; returns it."""
    if scheme not in INITS:
        raise models.ConfigError(f"Unknown initialisation {scheme!r}; choose one of {', '.join(INITS)}.")
    with models.seeded(seed), torch.no_grad():
        for m in model.modules():
            if scheme == "default" and hasattr(m, "reset_parameters"):
                m.reset_parameters()
            elif isinstance(m, (nn.BatchNorm2d, nn.Linear)) and scheme != "default":
                m.reset_parameters()  # BN: weight 1, bias 0 (torchvision does the same); fc: PyTorch default
                if scheme == "xavier" and isinstance(m, nn.Linear):
                    nn.init.xavier_normal_(m.weight)
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d) and scheme == "xavier":
                nn.init.xavier_normal_(m.weight)
            elif isinstance(m, nn.Conv2d):  # kaiming, zero_last_bn
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if scheme == "zero_last_bn":
            for block in model.modules():
                bn, conv = _last_norm_and_conv(block)
                if isinstance(bn, nn.BatchNorm2d):
                    nn.init.zeros_(bn.weight)
                elif conv is not None and hasattr(block, "downsample"):  # no BN: zero the branch's last conv
                    nn.init.zeros_(conv.weight)
    return model


# --- which layers ------------------------------------------------------------------------------------------


def signal_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Weighted layers on the main path (convs and linear layers, not projection shortcuts), in depth order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and "downsample" not in name.split(".")]


def response_module(model: nn.Module, conv_name: str) -> nn.Module | None:
    """The norm layer right after conv ``conv_name`` (``...conv2`` -> ``...bn2``), where the paper reads Fig. 7."""
    parent, _, leaf = conv_name.rpartition(".")
    bn_name = (f"{parent}." if parent else "") + leaf.replace("conv", "bn")
    return dict(model.named_modules()).get(bn_name) if leaf.startswith("conv") else None


def layer_info(model: nn.Module) -> dict:
    """Names, kinds (``conv 3x3``, ``fc``) and stage numbers (0 = stem, last = head) of ``signal_layers``."""
    names, kinds, stages = [], [], []
    for name, m in signal_layers(model):
        names.append(name)
        kinds.append("fc" if isinstance(m, nn.Linear) else f"conv {m.kernel_size[0]}x{m.kernel_size[1]}")
        hit = re.match(r"layer(\d+)\.", name)
        stages.append(int(hit.group(1)) if hit else (0 if not stages else -1))
    head = max(stages, default=0) + 1
    return {"names": names, "kinds": kinds, "stages": [head if s == -1 else s for s in stages]}


# --- collecting --------------------------------------------------------------------------------------------


def _sum_and_l2(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two fast reductions (sum and L2 norm) from which mean, std and norm follow; var_mean is ~10x slower on CPU."""
    return t.sum(), torch.linalg.vector_norm(t)


def _mean_std(total: np.ndarray, l2: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std of ``count`` elements from their sum and L2 norm, in float64."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        return mean, np.sqrt(np.maximum(l2**2 / count - mean**2, 0.0))


def collect_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """One forward and backward pass of ``model`` on ``(x, y)`` with statistics per ``signal_layers`` layer.

    Returns numpy arrays (one value per layer): ``act_norm`` (per-example L2 norm of the layer's output, RMS
    over the batch), ``act_mean``, ``act_std`` (over every element), ``grad_norm`` (L2 norm of d loss / d output),
    ``weight_grad_norm`` (L2 norm of d loss / d weight), ``resp_std`` (std of the following BN's output, the
    paper's Fig. 7; NaN for layers that are not 3x3 convs), plus ``loss`` and ``layer_info``. The model runs in
    the mode it is in (train mode: BN uses batch statistics and updates its running ones). No ``.grad`` is
    written: gradients come from ``torch.autograd.grad``. Every hook is removed, even on error.
    """
    layers = signal_layers(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("No weight requires grad; pass a copy with requires_grad_(True).")
    device = params[0].device
    nan = torch.full((), math.nan, device=device)
    n = len(layers)
    fwd, grads, resp, numel = [(nan, nan)] * n, [nan] * n, [(nan, nan)] * n, [0] * n
    handles = []

    def on_forward(i):
        def hook(module, inputs, out):
            t = out.detach()  # reduced now, before any in-place op that follows can change it
            fwd[i], numel[i] = _sum_and_l2(t), t.numel()
            if out.requires_grad:
                out.register_hook(lambda g: grads.__setitem__(i, torch.linalg.vector_norm(g)))
        return hook

    def on_response(i):
        def hook(module, inputs, out):
            resp[i] = _sum_and_l2(out.detach())
        return hook

    try:
        for i, (name, m) in enumerate(layers):
            handles.append(m.register_forward_hook(on_forward(i)))
            r = response_module(model, name) if getattr(m, "kernel_size", None) == (3, 3) else None
            if r is not None:
                handles.append(r.register_forward_hook(on_response(i)))
            elif getattr(m, "kernel_size", None) == (3, 3):  # no norm layer after it: the conv output itself
                handles.append(m.register_forward_hook(on_response(i)))
        loss = F.cross_entropy(model(x), y)
        all_grads = torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    by_param = {id(p): g for p, g in zip(params, all_grads)}
    rows = []
    for i, (_, m) in enumerate(layers):
        g = by_param.get(id(m.weight))
        values = (*fwd[i], grads[i], nan if g is None else torch.linalg.vector_norm(g), *resp[i])
        rows.append(torch.stack([v.float() for v in values]))  # float: a half-precision model mixes dtypes
    table = torch.stack(rows).cpu().numpy() if rows else np.zeros((0, len(COLUMNS)), np.float32)
    out = {c: table[:, k].astype(np.float64) for k, c in enumerate(COLUMNS)}
    count = np.array(numel, np.float64)
    out["act_norm"] = out["act_l2"] / math.sqrt(x.shape[0])  # RMS over the batch of per-example L2 norms
    out["act_mean"], out["act_std"] = _mean_std(out.pop("act_sum"), out.pop("act_l2"), count)
    out["resp_std"] = _mean_std(out.pop("resp_sum"), out.pop("resp_l2"), count)[1]  # BN keeps the conv's shape
    out["loss"] = float(loss.detach())
    out["layer_info"] = layer_info(model)
    return out


# --- ResNet against plain twin -----------------------------------------------------------------------------


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 0.01,
                progress=None) -> list[float]:
    """``steps`` plain SGD steps on the batch ``(x, y)``, in place; stops early if the loss stops being finite."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, steps)
        if not math.isfinite(losses[-1]):
            break
    opt.zero_grad(set_to_none=True)
    return losses


def compare_signal_flow(cfg_or_model: models.ResNetConfig | models.ResNet, x: torch.Tensor, y: torch.Tensor,
                        device: str | torch.device = "cpu", init: str = "kaiming", steps: int = 0,
                        lr: float = 0.01, seed: int = 0, progress=None) -> dict:
    """Statistics of a ResNet and its plain twin (same initial weights, same batch), after ``steps`` SGD steps.

    A model passed in is never changed: the work happens on a deep copy. ``progress(done, total, what)`` is called
    after each training step and measurement. Returns ``{"resnet": stats, "plain": stats, "cfg", "init", "steps",
    "lr", "losses": {"resnet": [...], "plain": [...]}}`` with numpy/float values only.
    """
    if isinstance(cfg_or_model, nn.Module):
        resnet = copy.deepcopy(cfg_or_model).cpu()  # the deep copy shares no tensor with a cached model
        cfg = replace(resnet.cfg, residual=True)
        if not resnet.cfg.residual:
            raise models.ConfigError("Start from the residual network; its plain twin is built here.")
    else:
        cfg = replace(cfg_or_model, residual=True)
        resnet = models.build_model(cfg, seed=seed)
    apply_init(resnet, init, seed)
    nets = {"resnet": resnet, "plain": models.plain_twin(resnet)}  # the twin copies the freshly drawn weights
    total = 2 * (steps + 1)
    done = 0
    result = {"cfg": cfg, "init": init, "steps": steps, "lr": lr, "losses": {}}
    for key, net in nets.items():
        net.to(device).train().requires_grad_(True)
        xd, yd = x.to(device), y.to(device)

        def tick(step, _n, key=key, base=done):
            if progress is not None:
                progress(base + step, total, f"training the {key} net: step {step} of {steps}")

        losses = train_steps(net, xd, yd, steps, lr, tick)
        result["losses"][key] = losses
        bad = [i + 1 for i, v in enumerate(losses) if not math.isfinite(v)]
        result.setdefault("diverged", {})[key] = bad[0] if bad else None  # first step whose loss was inf/NaN
        done += steps
        result[key] = collect_stats(net, xd, yd)
        done += 1
        if progress is not None:
            progress(done, total, f"measured the {key} net")
    return result


def stats_table(result: dict) -> dict[str, list]:
    """Every per-layer number of both nets as columns (for a table next to the charts)."""
    info = result["resnet"]["layer_info"]
    table = {"layer": info["names"], "kind": info["kinds"], "stage": info["stages"]}
    for key, label in (("resnet", "ResNet"), ("plain", "plain")):
        for col in ("act_norm", "act_mean", "act_std", "grad_norm", "weight_grad_norm", "resp_std"):
            table[f"{label} {col}"] = [float(v) for v in result[key][col]]
    return table


# --- what the charts show, in words ------------------------------------------------------------------------


def _verdict(first: float, last: float) -> tuple[str, str]:
    """(what the norm does, by how much) for a norm going from ``first`` to ``last``."""
    if not (math.isfinite(first) and math.isfinite(last)):
        return "overflows", "inf or NaN in float32"
    if first == 0 or last == 0:
        return "dies", "exactly zero"
    f = last / first
    size = f"{f:.3g}x larger" if f >= 1 else f"{1 / f:.3g}x smaller"
    for bound, word in ((VANISH, "vanishes"), (0.1, "fades"), (10, "stays healthy"), (EXPLODE, "grows")):
        if f < bound:
            return word, size
    return "explodes", size


def flow_summary(result: dict) -> dict:
    """Measured ends per net: activation norm from the first conv to the last, gradient norm from the output
    (the fc layer, where the loss's gradient enters) back to the first conv."""
    out = {}
    for key in ("resnet", "plain"):
        s = result[key]
        conv = [i for i, k in enumerate(s["layer_info"]["kinds"]) if k != "fc"]
        a, g = s["act_norm"], s["grad_norm"]
        act, grad = (float(a[conv[0]]), float(a[conv[-1]])), (float(g[-1]), float(g[conv[0]]))
        resp = s["resp_std"][np.isfinite(s["resp_std"])]
        out[key] = {"act": act, "grad": grad, "act_verdict": _verdict(*act), "grad_verdict": _verdict(*grad),
                    "resp_mean": float(resp.mean()) if resp.size else math.nan, "loss": s["loss"]}
    return out


def _context(result: dict, s: dict) -> str:
    """The sentence that puts this configuration's measurement next to the paper's argument."""
    cfg, trained = result["cfg"], result["steps"] > 0
    (pw, psize), rw = s["plain"]["grad_verdict"], s["resnet"]["grad_verdict"][0]
    if pw == "dies" and result["init"] == "zero_last_bn":
        return ("Zeroing the last BN of every block switches each plain block off (its output is zero); only a "
                "shortcut lets the signal past such a block.")
    if cfg.norm and pw in ("fades", "stays healthy", "grows", "explodes"):
        grows = (", as deep plain nets with batch norm are known to do at initialization: Yang et al., ICLR 2019"
                 if pw in ("grows", "explodes") and not trained else "")
        return (f"With batch norm the plain net's gradient does not vanish here (at the first conv it is {psize} "
                f"than at the output{grows}), in line with the paper (section 4.1): deep plain nets with BN still "
                "train worse, so their trouble is an optimization difficulty, not a vanishing signal. The "
                "difference lies elsewhere: see the training page.")
    if cfg.norm:
        return f"With batch norm the plain net's gradient {pw} here ({psize})."
    if pw in ("fades", "stays healthy", "grows"):
        return (f"Without batch norm the plain net's gradient {pw} across {cfg.depth} layers with this "
                f"initialization ({psize} at the first conv)"
                + ("; try PyTorch's default initialization." if result["init"] != "default" else "."))
    text = f"Without batch norm nothing rescales the signal: across {cfg.depth} layers the plain net's gradient {pw}"
    if rw in ("fades", "stays healthy", "grows"):
        return text + f", while the ResNet's shortcuts carry it through (its gradient {rw})."
    if rw in ("explodes", "overflows") and not trained:
        return (text + f", and the ResNet's {rw}: each shortcut adds its block's output to the signal, so "
                "without BN the variance adds up block after block.")
    return text + f", and the ResNet's {rw} too."


def explain_signal_flow(result: dict) -> list[str]:
    """Markdown sentences saying what the measured numbers show for this configuration."""
    s = flow_summary(result)
    lines = []
    for key, label in (("resnet", "ResNet"), ("plain", "Plain twin")):
        v = s[key]
        (aw, af), (gw, gf) = v["act_verdict"], v["grad_verdict"]
        lines.append(f"**{label}**: going forward, the activation norm goes from {v['act'][0]:.3g} at the first "
                     f"conv to {v['act'][1]:.3g} at the last ({af}: it {aw}); going backward, the gradient norm "
                     f"goes from {v['grad'][0]:.3g} at the output to {v['grad'][1]:.3g} at the first conv "
                     f"({gf}: it {gw}).")
    lines.append(_context(result, s))
    if result["steps"]:
        lines.append(f"After {result['steps']} SGD steps (lr {result['lr']:g}) on this batch the loss is "
                     f"{s['resnet']['loss']:.3g} for the ResNet and {s['plain']['loss']:.3g} for the plain twin.")
    return lines


def explain_responses(result: dict) -> str:
    """One sentence on the Fig. 7 chart, from the measured stds."""
    s, cfg = flow_summary(result), result["cfg"]
    r, p = s["resnet"]["resp_mean"], s["plain"]["resp_mean"]
    text = f"Mean std of the 3x3 responses: ResNet {r:.3g}, plain twin {p:.3g}."
    if not cfg.norm:
        return text + " Without BN the response is the 3x3 conv's own output."
    if result["steps"] == 0 and result["init"] != "zero_last_bn":
        text += (" At initialization every BN scales its output to std 1 (weight 1, batch statistics), so both "
                 "curves sit at 1 by construction.")
    else:
        zeroed = " (0 for the zeroed ones)" if result["init"] == "zero_last_bn" else ""
        text += f" With BN a response's std follows its BN's learned scale, which starts at 1{zeroed} and moves slowly."
    return text + (" The paper's Fig. 7 is measured after full training (64k iterations), where ResNets' responses "
                   "are generally smaller than plain nets': their blocks only add small residuals.")
