"""Signal flow: how the signal and its gradient travel through a ResNet and its plain twin, layer by layer.

Statistics are taken with forward hooks and tensor (gradient) hooks (``resviz.hooks.Hooks``), so they work on any
``nn.Module``, torchvision's own ResNets included (their blocks modify tensors in place: every forward statistic is
reduced inside the hook, before the next in-place op, and a tensor hook sees the gradient of the value it was
registered on). Reductions stay on the model's device; one stack and one copy to the CPU happen at the end, so
collecting costs a few percent of a forward+backward pass.

A *layer* here is a weighted layer on the main path (the convs and the fc layer the paper counts in "ResNet-20");
projection shortcuts are left out so that a ResNet and its plain twin line up layer for layer. Every size is a
per-element RMS (the root mean square over the batch and every channel and position), so that layers of different
sizes compare like with like; the verdicts run from the first conv to the last conv (forward) and back (backward),
leaving out the average pool and the classifier, whose sizes have nothing to do with the signal's health.
"""
from __future__ import annotations

import copy
import enum
import hashlib
import math
import re
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resviz import models, prepared
from resviz.hooks import Hooks
from resviz.inputs import limits
from resviz.lessons.training import Tone

DEPTHS = (8, 14, 20, 32, 44, 56, 110, 164, 218, 326)  # 6k+2 layers; the paper's CIFAR nets go to 110, beyond is custom
VANISH, EXPLODE = 1e-2, 1e2  # a size that changes more than 100x across the net has vanished / exploded
STEADY = 10.0  # within a factor of 10 either way: steady


class Init(enum.Enum):
    """How the weights are drawn before measuring."""
    KAIMING = "kaiming"
    DEFAULT = "default"
    XAVIER = "xavier"
    ZERO_LAST = "zero_last_bn"

    @property
    def what(self) -> str:
        """What the scheme does, in words."""
        return {
            Init.KAIMING: "Kaiming-normal convs, fan-out (He et al. 2015; torchvision's and resviz's default)",
            Init.DEFAULT: "PyTorch's layer defaults (reset_parameters: Kaiming-uniform with a=sqrt(5), BN weight 1)",
            Init.XAVIER: "Xavier/Glorot-normal convs and fc (Glorot & Bengio 2010)",
            Init.ZERO_LAST: "Kaiming, plus the last BN of each block set to zero, so each block starts as the "
                            "identity (Goyal et al. 2017); without BN the block's last conv is zeroed instead",
        }[self]


class Net(enum.Enum):
    """The two networks compared."""
    RESNET = "resnet"
    PLAIN = "plain"

    @property
    def label(self) -> str:
        return "ResNet" if self is Net.RESNET else "plain twin"


@dataclass(frozen=True)
class Settings:
    """Everything one measurement depends on (hashable: it keys the shared cache)."""
    cfg: models.ResNetConfig  # the residual network; its plain twin is built from it
    init: Init = Init.KAIMING
    steps: int = 0  # plain SGD steps on the batch before measuring; 0 = at initialisation
    lr: float = 0.01  # learning rate of those steps
    batch: int = 8  # random images in the built-in batch (an uploaded image is a batch of one)
    seed: int = 0  # draws the weights, the images and the labels


class Input(enum.Enum):
    """Where the batch comes from; the value is the label the page's radio shows."""
    BATCH = "Built-in batch"
    IMAGE = "Upload an image"


def cifar_config(depth: int, norm: bool = True) -> models.ResNetConfig:
    """The paper's CIFAR ResNet with ``depth`` = 6k+2 weighted layers (3 stages of k basic blocks)."""
    if depth < 8 or (depth - 2) % 6:
        raise models.ConfigError(f"CIFAR ResNets have 6k+2 layers (8, 14, 20, …); {depth} is not one of them.")
    k = (depth - 2) // 6
    return replace(models.get_config("resnet20"), layers=(k, k, k), norm=norm, name=f"resnet{depth}")


def chosen_config(depth: int, norm: bool, sidebar: models.ResNetConfig | None = None) -> models.ResNetConfig:
    """The network the page measures: the CIFAR ResNet of ``depth``, or the sidebar's, with BN on or off."""
    return replace(models.with_shortcuts(sidebar), norm=norm) if sidebar is not None else cifar_config(depth, norm)


def max_batch(cfg: models.ResNetConfig) -> int:
    """The largest built-in batch offered: ImageNet-size inputs take seconds per image on a CPU."""
    return 32 if cfg.input_size <= 64 else 8


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


def apply_init(model: nn.Module, scheme: Init | str, seed: int = 0) -> nn.Module:
    """Re-initialise ``model`` in place with ``scheme`` (an Init or its value), drawing from ``seed``; returns it."""
    try:
        scheme = Init(scheme)
    except ValueError:
        raise models.ConfigError(f"Unknown initialisation {scheme!r}; choose one of "
                                 f"{', '.join(i.value for i in Init)}.") from None
    with models.seeded(seed), torch.no_grad():
        for m in model.modules():
            if scheme is Init.DEFAULT and hasattr(m, "reset_parameters"):
                m.reset_parameters()
            elif isinstance(m, (nn.BatchNorm2d, nn.Linear)) and scheme is not Init.DEFAULT:
                m.reset_parameters()  # BN: weight 1, bias 0 (torchvision does the same); fc: PyTorch default
                if scheme is Init.XAVIER and isinstance(m, nn.Linear):
                    nn.init.xavier_normal_(m.weight)
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d) and scheme is Init.XAVIER:
                nn.init.xavier_normal_(m.weight)
            elif isinstance(m, nn.Conv2d):  # kaiming, zero_last_bn
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if scheme is Init.ZERO_LAST:
            for block in model.modules():
                bn, conv = _last_norm_and_conv(block)
                if isinstance(bn, nn.BatchNorm2d):
                    nn.init.zeros_(bn.weight)
                elif conv is not None and hasattr(block, "downsample"):  # no BN: zero the branch's last conv
                    nn.init.zeros_(conv.weight)
    return model


# --- which layers ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layers:
    """The weighted layers on the main path, in depth order."""
    names: tuple[str, ...]
    kernels: tuple[int | None, ...]  # a conv's kernel size (3 for 3x3); None for the fc layer
    stages: tuple[int, ...]  # 0 = stem, 1.. = the stages, last = the classifier head

    @property
    def convs(self) -> list[int]:
        """Indices of the convolutions (every layer but the classifier)."""
        return [i for i, k in enumerate(self.kernels) if k is not None]

    @property
    def convs3x3(self) -> list[int]:
        """Indices of the 3x3 convolutions (where the paper reads Fig. 7)."""
        return [i for i, k in enumerate(self.kernels) if k == 3]

    def kind(self, i: int) -> str:
        """``conv 3x3`` or ``fc``, for labels."""
        k = self.kernels[i]
        return "fc" if k is None else f"conv {k}x{k}"


def signal_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Weighted layers on the main path (convs and linear layers, not projection shortcuts), in depth order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and "downsample" not in name.split(".")]


def response_module(model: nn.Module, conv_name: str) -> nn.Module | None:
    """The norm layer right after conv ``conv_name`` (``...conv2`` -> ``...bn2``), where the paper reads Fig. 7."""
    parent, _, leaf = conv_name.rpartition(".")
    bn_name = (f"{parent}." if parent else "") + leaf.replace("conv", "bn")
    return dict(model.named_modules()).get(bn_name) if leaf.startswith("conv") else None


def layer_info(model: nn.Module) -> Layers:
    """Names, kernel sizes and stage numbers (0 = stem, last = head) of ``signal_layers``."""
    names, kernels, stages = [], [], []
    for name, m in signal_layers(model):
        names.append(name)
        kernels.append(None if isinstance(m, nn.Linear) else int(m.kernel_size[0]))
        hit = re.match(r"layer(\d+)\.", name)
        stages.append(int(hit.group(1)) if hit else (0 if not stages else -1))
    head = max(stages, default=0) + 1
    return Layers(tuple(names), tuple(kernels), tuple(head if s == -1 else s for s in stages))


# --- collecting --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LayerStats:
    """One forward and backward pass, one number per layer (numpy, float64). RMS = root mean square over every
    element of the tensor: the batch and all channels and positions."""
    layers: Layers
    shapes: tuple[tuple[int, ...], ...]  # each layer's output shape for one example: (C, H, W) or (classes,)
    act_rms: np.ndarray  # RMS of the layer's output (a conv's output before its BN)
    act_mean: np.ndarray  # mean of the same elements
    act_std: np.ndarray  # their (population) standard deviation
    grad_rms: np.ndarray  # RMS of d loss / d output (loss: cross-entropy averaged over the batch)
    weight_grad_rms: np.ndarray  # RMS of d loss / d weight over the layer's weights
    resp_std: np.ndarray  # std of the 3x3 conv's response after its BN, before any addition (Fig. 7); NaN otherwise
    loss: float
    batch: int


def _sum_and_sq(t: torch.Tensor) -> torch.Tensor:
    """Sum and sum of squares, two fast reductions from which mean, RMS and std follow (var_mean is ~10x slower)."""
    return torch.stack([t.sum(), torch.linalg.vector_norm(t) ** 2]).float()


def _moments(sums: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, RMS and (population) std of ``count`` elements from their sum and sum of squares, in float64."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean, square = sums[:, 0] / count, sums[:, 1] / count
        return mean, np.sqrt(square), np.sqrt(np.maximum(square - mean**2, 0.0))


def collect_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LayerStats:
    """One forward and backward pass of ``model`` on ``(x, y)`` with statistics per ``signal_layers`` layer.

    The model runs in the mode it is in (train mode: BN uses batch statistics and updates its running ones). No
    ``.grad`` is written: gradients come from ``torch.autograd.grad``. Every hook is removed, even on error.
    """
    layers = signal_layers(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("No weight requires grad; pass a copy with requires_grad_(True).")
    nan = torch.full((2,), math.nan, device=params[0].device)
    n = len(layers)
    fwd, grads, resp, shapes = [nan] * n, [nan[0]] * n, [nan] * n, [()] * n

    def on_forward(i, hooks):
        def hook(module, inputs, out):
            fwd[i], shapes[i] = _sum_and_sq(out.detach()), tuple(out.shape[1:])  # reduced before any in-place op
            if out.requires_grad:
                hooks.tensor(out, lambda g: grads.__setitem__(i, torch.linalg.vector_norm(g).float()))
        return hook

    def on_response(i):
        return lambda module, inputs, out: resp.__setitem__(i, _sum_and_sq(out.detach()))

    with Hooks() as hooks:
        for i, (name, m) in enumerate(layers):
            hooks.forward(m, on_forward(i, hooks))
            if getattr(m, "kernel_size", None) == (3, 3):  # Fig. 7: after the BN, or the conv itself without one
                hooks.forward(response_module(model, name) or m, on_response(i))
        loss = F.cross_entropy(model(x), y)
        all_grads = torch.autograd.grad(loss, params, allow_unused=True)
    by_param = {id(p): g for p, g in zip(params, all_grads)}
    wgrad = [by_param.get(id(m.weight)) for _, m in layers]
    wgrad = [nan[0] if g is None else torch.linalg.vector_norm(g).float() for g in wgrad]
    host = torch.stack([torch.stack([*f, g, w, *r]) for f, g, w, r in zip(fwd, grads, wgrad, resp)]).cpu().numpy() \
        if n else np.zeros((0, 6), np.float32)
    host = host.astype(np.float64)
    count = np.array([math.prod(s) * x.shape[0] for s in shapes], np.float64)
    wcount = np.array([m.weight.numel() for _, m in layers], np.float64)
    mean, rms, std = _moments(host[:, 0:2], count)
    with np.errstate(invalid="ignore", divide="ignore"):
        grad_rms, wgrad_rms = host[:, 2] / np.sqrt(count), host[:, 3] / np.sqrt(wcount)
    resp_std = _moments(host[:, 4:6], count)[2]  # BN keeps the conv's shape
    return LayerStats(layer_info(model), tuple(shapes), rms, mean, std, grad_rms, wgrad_rms, resp_std,
                      float(loss.detach()), int(x.shape[0]))


# --- ResNet against plain twin -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class NetRun:
    """One network's measurement, after its training steps (and at initialisation, before them)."""
    stats: LayerStats
    init_stats: LayerStats  # the same as ``stats`` when there were no steps
    losses: tuple[float, ...]  # the loss before each SGD step
    diverged_at: int | None  # the first step whose loss was inf or NaN


@dataclass(frozen=True, eq=False)
class FlowResult:
    """Both networks, measured on the same batch from the same initial weights."""
    settings: Settings
    runs: dict  # Net -> NetRun

    def __getitem__(self, net: Net) -> NetRun:
        return self.runs[net]


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 0.01,
                progress: Callable[[int], None] | None = None) -> list[float]:
    """``steps`` plain SGD steps on the batch ``(x, y)``, in place; stops early if the loss stops being finite."""
    if steps == 0:
        return []  # the optimizer's first construction imports torch._dynamo: seconds of a cold server's time
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
            progress(step + 1)
        if not math.isfinite(losses[-1]):
            break
    opt.zero_grad(set_to_none=True)
    return losses


def compare_signal_flow(cfg_or_model: models.ResNetConfig | models.ResNet, x: torch.Tensor, y: torch.Tensor,
                        device: str | torch.device = "cpu", init: Init | str = Init.KAIMING, steps: int = 0,
                        lr: float = 0.01, seed: int = 0,
                        progress: Callable[[float], None] | None = None) -> FlowResult:
    """Statistics of a ResNet and its plain twin (same initial weights, same batch), after ``steps`` SGD steps.

    A model passed in is never changed: the work happens on a deep copy. ``progress(fraction)`` is called after
    each training step and measurement.
    """
    if isinstance(cfg_or_model, nn.Module):
        if not cfg_or_model.cfg.residual:
            raise models.ConfigError("Start from the residual network; its plain twin is built here.")
        resnet = copy.deepcopy(cfg_or_model).cpu()  # the deep copy shares no tensor with a cached model
    else:
        resnet = models.build_model(models.with_shortcuts(cfg_or_model), seed=seed)
    init = Init(init)
    settings = Settings(resnet.cfg, init, steps, lr, int(x.shape[0]), seed)
    apply_init(resnet, init, seed)
    nets = {Net.RESNET: resnet, Net.PLAIN: models.plain_twin(resnet)}  # the twin copies the freshly drawn weights
    total, runs = 2 * (steps + 1), {}
    xd, yd = x.to(device), y.to(device)
    for k, (net_kind, net) in enumerate(nets.items()):
        net.to(device).train().requires_grad_(True)
        base = k * (steps + 1)
        at_init = collect_stats(net, xd, yd) if steps else None
        losses = train_steps(net, xd, yd, steps, lr, lambda s, base=base: progress and progress((base + s) / total))
        bad = [i + 1 for i, v in enumerate(losses) if not math.isfinite(v)]
        stats = collect_stats(net, xd, yd)
        runs[net_kind] = NetRun(stats, at_init or stats, tuple(losses), bad[0] if bad else None)
        if progress is not None:
            progress((base + steps + 1) / total)
    return FlowResult(settings, runs)


@prepared.kept_on_disk(lambda settings, image=None, device="cpu", progress=None: (
    "signal_flow", settings, str(device), image and hashlib.sha1(image).hexdigest()))
def measure(settings: Settings, image: bytes | None = None, device: str | torch.device = "cpu",
            progress: Callable[[float], None] | None = None) -> FlowResult:
    """The page's measurement: the built-in batch (or ``image`` as a batch of one) through both networks."""
    cfg = settings.cfg
    x, y = image_batch(image, cfg, settings.seed) if image is not None else sample_batch(cfg, settings.batch,
                                                                                         settings.seed)
    return compare_signal_flow(cfg, x, y, device, settings.init, settings.steps, settings.lr, settings.seed, progress)


# --- what the charts show, in words --------------------------------------------------------------------------


class Trend(enum.Enum):
    """What a size does between two layers; the value is the verb the page uses."""
    VANISHES = "vanishes"  # below 1/100 of where it started
    SHRINKS = "shrinks"  # 1/100 .. 1/10
    STEADY = "stays within 10x"  # 1/10 .. 10
    GROWS = "grows"  # 10 .. 100
    EXPLODES = "explodes"  # above 100x
    ZERO = "is exactly zero"  # ends at exactly 0
    FROM_ZERO = "starts at exactly zero"  # starts at exactly 0: no ratio
    OVERFLOWS = "overflows"  # inf or NaN in float32


def trend_of(start: float, end: float) -> Trend:
    """The Trend of a size going from ``start`` to ``end``."""
    if not (math.isfinite(start) and math.isfinite(end)):
        return Trend.OVERFLOWS
    if end == 0:
        return Trend.ZERO
    if start == 0:
        return Trend.FROM_ZERO
    r = end / start
    bands = ((VANISH, Trend.VANISHES), (1 / STEADY, Trend.SHRINKS), (STEADY, Trend.STEADY), (EXPLODE, Trend.GROWS))
    return next((t for bound, t in bands if r < bound), Trend.EXPLODES)


@dataclass(frozen=True)
class Change:
    """A per-element RMS measured at two layers."""
    start: float
    end: float
    start_at: str  # "the first conv"
    end_at: str  # "the last conv"
    reason: str = ""  # set when the init, not the flow, decides the ratio: said instead of a verdict

    @property
    def ratio(self) -> float:
        return self.end / self.start if self.start else math.nan

    @property
    def trend(self) -> Trend:
        return trend_of(self.start, self.end)

    def factor(self) -> str:
        """``21.4x larger`` or ``5.2x smaller``."""
        r = self.ratio
        return f"{r:.3g}x larger" if r >= 1 else f"{1 / r:.3g}x smaller"

    def detail(self) -> str:
        """What happened, with the factor: ``21.4x larger: it grows``."""
        t = self.trend
        if t is Trend.ZERO:
            return "exactly zero at both" if self.start == 0 else f"exactly zero at {self.end_at}"
        if t is Trend.FROM_ZERO:
            return f"exactly zero at {self.start_at}: no ratio"
        if t is Trend.OVERFLOWS:
            return "inf or NaN in float32: it overflows"
        return f"{self.factor()}: " + (self.reason or f"it {t.value}")

    def short(self) -> str:
        """The verb with its factor, for a sentence: ``grows (21.4x larger)``."""
        t = self.trend
        if t is Trend.ZERO:
            return f"is exactly zero at {self.end_at}"
        if t is Trend.FROM_ZERO:
            return f"is exactly zero at {self.start_at}"
        if t is Trend.OVERFLOWS:
            return "overflows (inf or NaN)"
        return f"is {self.factor()} ({self.reason})" if self.reason else f"{t.value} ({self.factor()})"


@dataclass(frozen=True)
class NetFlow:
    """The two ends of one network's measurement, as the verdicts use them."""
    forward: Change  # RMS of the conv outputs, first conv -> last conv
    backward: Change  # RMS of d loss / d conv output, last conv -> first conv
    first_zero: str | None  # the first layer whose output is exactly zero (a switched-off block), if any
    last_live: float  # RMS of the last conv whose output is not exactly zero
    resp_mean: float  # mean std of the 3x3 responses (Fig. 7)
    loss: float
    entry_rms: float  # mean RMS of the blocks' first convs (they read what the shortcuts carry: the block's input)
    inner_rms: float  # mean RMS of the blocks' other convs (they read the branch)


def net_flow(s: LayerStats, settings: Settings | None = None) -> NetFlow:
    """The ends that the verdicts compare: convolutions only (the pool and the classifier are left out)."""
    c = s.layers.convs
    zeroed = settings is not None and settings.init is Init.ZERO_LAST
    fwd_reason = "the last conv's weights started at zero" if zeroed and not settings.cfg.norm else ""
    bwd_reason = "the last conv's BN weight started at zero" if zeroed and settings.cfg.norm else ""
    zero = [i for i in c if s.act_rms[i] == 0]
    live = [s.act_rms[i] for i in c if s.act_rms[i] > 0]
    resp = s.resp_std[np.isfinite(s.resp_std)]
    in_block = [i for i in c if s.layers.stages[i] > 0]
    entry = [s.act_rms[i] for i in in_block if s.layers.names[i].endswith(".conv1")]
    inner = [s.act_rms[i] for i in in_block if not s.layers.names[i].endswith(".conv1")]
    return NetFlow(Change(float(s.act_rms[c[0]]), float(s.act_rms[c[-1]]), "the first conv", "the last conv",
                          fwd_reason),
                   Change(float(s.grad_rms[c[-1]]), float(s.grad_rms[c[0]]), "the last conv", "the first conv",
                          bwd_reason),
                   s.layers.names[zero[0]] if zero else None, float(live[-1]) if live else 0.0,
                   float(resp.mean()) if resp.size else math.nan, s.loss,
                   float(np.mean(entry)) if entry else math.nan, float(np.mean(inner)) if inner else math.nan)


def flows(result: FlowResult, at_init: bool = False) -> dict[Net, NetFlow]:
    """Both networks' ends, after training (or ``at_init``)."""
    return {net: net_flow(run.init_stats if at_init else run.stats, result.settings)
            for net, run in result.runs.items()}


YANG = ("Yang et al. (ICLR 2019, “A Mean Field Theory of Batch Normalization”) show that at initialisation the "
        "gradients of batch-normalised networks without shortcuts explode, exponentially in depth")
HE = "He et al. (2016, §4.1)"
HE_FINDING = ("the backward gradients of their plain nets trained with BN have healthy norms, and that BN keeps "
              "the forward signals' variances non-zero")
HE_CONJECTURE = ("deep plain nets train worse because of exponentially low convergence rates, not vanishing "
                 "gradients")


def _title(net: Net) -> str:
    return net.label[0].upper() + net.label[1:]


def explain_nets(result: FlowResult) -> list[str]:
    """One Markdown line per network: both ends of the forward and the backward chart, with the verdict."""
    lines = []
    for net, f in flows(result).items():
        a, g = f.forward, f.backward
        lines.append(f"**{_title(net)}**: forward, the RMS of the conv outputs goes from {a.start:.3g} at "
                     f"{a.start_at} to {a.end:.3g} at {a.end_at} ({a.detail()}); backward, the RMS of the gradient "
                     f"goes from {g.start:.3g} at {g.start_at} to {g.end:.3g} at {g.end_at} ({g.detail()}).")
    return lines


def _zigzag_context(f: dict[Net, NetFlow]) -> list[str]:
    """Why the ResNet's forward curve zigzags: a block's first conv reads the sum the shortcuts carry."""
    res, pl = f[Net.RESNET], f[Net.PLAIN]
    if not (res.inner_rms > 0 and pl.inner_rms > 0 and res.entry_rms > 1.25 * res.inner_rms
            and res.entry_rms / res.inner_rms > 1.25 * pl.entry_rms / pl.inner_rms):
        return []  # no zigzag, or the plain twin zigzags as much: then the shortcuts do not explain it
    return [f"In the ResNet the first conv of every block reads the block's input, the sum that the shortcuts carry, "
            f"so its output is larger: an RMS of {res.entry_rms:.3g} on average, against {res.inner_rms:.3g} for the "
            f"other convs of the blocks (in the plain twin: {pl.entry_rms:.3g} against {pl.inner_rms:.3g}). "
            "That is the zigzag of the forward chart."]


def _zero_init_context(result: FlowResult, f: dict[Net, NetFlow]) -> list[str]:
    """Zero last BN (or, without BN, zero last conv): the ResNet starts as the identity, the plain twin as zero."""
    s, res, pl = result.settings, f[Net.RESNET], f[Net.PLAIN]
    out = [("“Zero last BN” sets the weight of every block's last BN to zero, so every residual branch starts by "
            "outputting zero." if s.cfg.norm else
            "Without batch norm “Zero last BN” zeroes the last conv of every block instead, so every residual "
            "branch starts by outputting zero (log axes leave exact zeros out).")]
    if res.backward.start == 0 and res.backward.end > 0:
        out.append("In the ResNet every block therefore starts as the identity: its branch convs get exactly zero "
                   "gradient for now (the loss does not depend on them while that weight is zero), and the "
                   f"shortcuts carry the gradient to the first conv ({res.backward.end:.3g} there).")
    elif res.backward.end > 0:
        live = (f" (the last conv that is not zero outputs an RMS of {res.last_live:.3g})"
                if res.forward.end == 0 else "")
        out.append(f"In the ResNet the shortcuts carry the signal past every block{live} and the gradient back to the "
                   f"first conv ({res.backward.end:.3g} there, {res.backward.start:.3g} at the last conv).")
    if pl.first_zero is not None:
        out.append(f"In the plain twin nothing goes around the zero: from {pl.first_zero} on every layer outputs "
                   "exactly zero" + (", and no gradient reaches the first conv." if pl.backward.end == 0 else "."))
        if s.steps and pl.backward.end == 0:
            out.append(f"After {s.steps} SGD steps it is still switched off: the ReLU after each zeroed layer passes "
                       "no gradient at zero, so training cannot move those weights.")
    return out


def _bn_context(result: FlowResult, f: dict[Net, NetFlow], f0: dict[Net, NetFlow]) -> list[str]:
    """With batch norm: explosion at initialisation (Yang et al.), healthy gradients after training (He et al.)."""
    s, res, pl = result.settings, f[Net.RESNET].backward, f[Net.PLAIN].backward
    now = f"after {s.steps} SGD steps (lr {s.lr:g})" if s.steps else "at initialisation"
    out = [f"With batch norm, {now}, from the last conv back to the first, the plain net's gradient {pl.short()} "
           f"and the ResNet's {res.short()}."]
    if pl.trend in (Trend.GROWS, Trend.EXPLODES) and pl.ratio > STEADY * res.ratio:
        out[0] += f" The plain net's gradient grows {pl.ratio / res.ratio:.3g}x more than the ResNet's."
    if not s.steps:
        if pl.trend in (Trend.GROWS, Trend.EXPLODES, Trend.OVERFLOWS):
            out.append(f"{YANG}.")
        return out + [f"Set training steps above 0 to see what a few SGD steps on this batch change. On ImageNet, "
                      f"{HE} verify that {HE_FINDING}; they conjecture that {HE_CONJECTURE}."]
    out.append(f"At initialisation the plain net's gradient {f0[Net.PLAIN].backward.short()}.")
    if pl.trend is Trend.STEADY and f[Net.PLAIN].forward.end > 0:
        out.append(f"That matches {HE}, who verify that {HE_FINDING}: here the plain net's gradient stays within 10x "
                   f"and its last conv outputs an RMS of {f[Net.PLAIN].forward.end:.3g}.")
    return out


def _plain_context(result: FlowResult, f: dict[Net, NetFlow]) -> list[str]:
    """Without batch norm: nothing rescales the signal; the shortcuts carry the gradient, and add up the signal."""
    s, res, pl = result.settings, f[Net.RESNET], f[Net.PLAIN]
    out = [f"Without batch norm nothing rescales the signal: across {s.cfg.depth} layers, from the last conv back to "
           f"the first, the plain net's gradient {pl.backward.short()} and the ResNet's {res.backward.short()}."]
    if res.backward.end > STEADY * pl.backward.end:
        times = f"{res.backward.end / pl.backward.end:.3g}x" if pl.backward.end > 0 else "non-zero, against zero for"
        out.append(f"The shortcuts carry the gradient back: at the first conv the ResNet's is {times} the plain net's.")
    if res.forward.trend in (Trend.GROWS, Trend.EXPLODES, Trend.OVERFLOWS):
        out.append("Each shortcut adds its block's output to the signal, so without BN the ResNet's activations grow "
                   f"block after block: from the first conv to the last their RMS {res.forward.short()}.")
    return out


MEMORISED = 0.1  # mean cross-entropy below this: on geometric average the label gets over 90% (exp(-0.1) = 0.905)


def loss_verdict(result: FlowResult) -> tuple[Tone, str] | None:
    """What the training steps' losses show, and only that: which net fit this one small batch of random labels
    faster (by more than 10%), or neither; None at initialisation. Never He et al.'s conjecture (§4.1): that is about
    deep plain nets' long training on real data (ImageNet), which this measurement is not."""
    s, f = result.settings, flows(result)
    if not s.steps:
        return None
    res, pl = f[Net.RESNET].loss, f[Net.PLAIN].loss
    n = result[Net.RESNET].stats.batch
    batch = f"one batch of {n} images with random labels" if n > 1 else "one image with a random label"
    said = (f"After {s.steps} SGD steps (lr {s.lr:g}) on {batch} (fitting it means memorising it), the loss on it is "
            f"{res:.3g} for the ResNet and {pl:.3g} for the plain twin")
    if not (math.isfinite(res) and math.isfinite(pl)):
        return Tone.WARNING, f"{said}: a training run diverged, so there is no ordering to read."
    real = (" How deep plain nets and ResNets train on real data is what He et al. (2016) measure over tens of "
            "thousands of iterations (Fig. 4 on ImageNet, Fig. 6 on CIFAR-10); the Training race page runs such a "
            "race.")
    if res < MEMORISED and pl < MEMORISED:
        return Tone.INFO, (f"{said}: both have memorised it (below {MEMORISED:g}, the right label's probability over "
                           f"90% on geometric average), so which got there first is not measured here.{real}")
    if res < 0.9 * pl:
        return Tone.SUCCESS, f"{said}: the ResNet fit this batch faster.{real}"
    if pl < 0.9 * res:
        return Tone.WARNING, f"{said}: the plain twin fit this batch faster.{real}"
    return Tone.INFO, f"{said}: within 10% of each other, so no ordering.{real}"


def explain_signal_flow(result: FlowResult) -> list[str]:
    """Markdown sentences saying what the measured numbers show for this configuration."""
    f, s = flows(result), result.settings
    if s.init is Init.ZERO_LAST:
        context = _zero_init_context(result, f)
    elif s.cfg.norm:
        context = _bn_context(result, f, flows(result, at_init=True)) + _zigzag_context(f)
    else:
        context = _plain_context(result, f) + _zigzag_context(f)
    return explain_nets(result) + context


def explain_responses(result: FlowResult) -> str:
    """One paragraph on the Fig. 7 chart, from the measured stds."""
    s, f = result.settings, flows(result)
    r, p = f[Net.RESNET].resp_mean, f[Net.PLAIN].resp_mean
    text = f"Mean std of the 3x3 responses: ResNet {r:.3g}, plain twin {p:.3g}."
    if not s.cfg.norm:
        text += " Without BN the response is the 3x3 conv's own output."
    elif abs(r - 1) < 0.01 and abs(p - 1) < 0.01:
        text += (" Every BN in train mode scales its output to std 1 times its weight, and the weights start at 1: "
                 "both curves sit at 1 by construction.")
    return text + (" The paper's Fig. 7 is measured on CIFAR-10 after full training (64k iterations), where "
                   "ResNets' responses are generally smaller than plain nets' (He et al. 2016, §4.2).")


def warnings(result: FlowResult) -> list[str]:
    """A message for each network whose training diverged."""
    return [f"The {net.label}'s training diverged at step {run.diverged_at} (the loss became inf or NaN); its charts "
            "show what is left. Try a smaller learning rate." for net, run in result.runs.items() if run.diverged_at]


def describe(result: FlowResult, uploaded: bool) -> str:
    """What was measured, in one caption: networks, weights, training, input."""
    s = result.settings
    trained = (f"then {s.steps} plain SGD steps (lr {s.lr:g}) on this batch" if s.steps else
               "untrained (measured at initialisation)")
    source = "your image (a batch of 1)" if uploaded else f"{s.batch} random images (seed {s.seed})"
    return (f"**{s.cfg.label}** ({s.cfg.depth} layers, batch norm {'on' if s.cfg.norm else 'off'}) and its plain "
            f"twin: **random weights** (seed {s.seed}; {s.init.what}), {trained}. Input: {source}.")


def stats_table(result: FlowResult) -> dict[str, list]:
    """Every per-layer number of both nets as columns; RMS and std are over the batch and every channel and position."""
    st = result[Net.RESNET].stats
    table = {"layer": list(st.layers.names), "kind": [st.layers.kind(i) for i in range(len(st.layers.names))],
             "stage": list(st.layers.stages), "output shape (one example)": ["×".join(map(str, s)) for s in st.shapes]}
    columns = (("act_rms", "output RMS"), ("act_mean", "output mean"), ("act_std", "output std"),
               ("grad_rms", "∂loss/∂output RMS"), ("weight_grad_rms", "∂loss/∂weight RMS"),
               ("resp_std", "Fig. 7 response std"))
    for net, run in result.runs.items():
        for attr, label in columns:
            table[f"{net.label}: {label}"] = [float(v) for v in getattr(run.stats, attr)]
    return table


# --- lesson claims (python -m resviz.claims --only signal_flow) --------------------------------------------

_NET_LINE = re.compile(r"\*\*(?P<net>[^*]+)\*\*: forward, the RMS of the conv outputs goes from (?P<a0>\S+) at the "
                       r"first conv to (?P<a1>\S+) at the last conv \((?P<fwd>.+?)\); backward, the RMS of the "
                       r"gradient goes from (?P<g1>\S+) at the last conv to (?P<g0>\S+) at the first conv "
                       r"\((?P<bwd>.+?)\)\.$")
_BANDS = {Trend.VANISHES: (0.0, VANISH), Trend.SHRINKS: (VANISH, 1 / STEADY), Trend.STEADY: (1 / STEADY, STEADY),
          Trend.GROWS: (STEADY, EXPLODE), Trend.EXPLODES: (EXPLODE, math.inf)}


def _said_margin(said: str, start: float, end: float) -> tuple[float, str]:
    """How far (in decades) the measured ratio lies inside the band of the verdict the text states; -1 when the
    text states a verdict the numbers contradict."""
    if end == 0 or start == 0:
        return (1.0 if said.startswith("exactly zero") else -1.0), "exactly zero"
    r = end / start
    for trend, (lo, hi) in _BANDS.items():
        if said.endswith(f"it {trend.value}"):
            inside = min(math.log10(r / lo) if lo else math.inf, math.log10(hi / r) if hi < math.inf else math.inf)
            return inside, f"{r:.3g}x: {trend.value}"
    factor = f"{r:.3g}x larger" if r >= 1 else f"{1 / r:.3g}x smaller"
    return (1.0 if said.startswith(factor) else -1.0), said  # the init decides it: the factor must still be right


def _text_claim(name: str, result: FlowResult) -> "Claim":
    """The page's two network lines for ``result``, each number and verdict checked against the per-layer arrays."""
    from resviz.claims import Claim

    lines = [m for line in explain_signal_flow(result) if (m := _NET_LINE.match(line))]
    margins, details = [-1.0] if len(lines) != 2 else [], []
    for m, net in zip(lines, Net):
        s = result[net].stats
        c = [i for i, k in enumerate(s.layers.kernels) if k is not None]
        a0, a1, g1, g0 = s.act_rms[c[0]], s.act_rms[c[-1]], s.grad_rms[c[-1]], s.grad_rms[c[0]]
        same = m.group("a0", "a1", "g1", "g0") == tuple(f"{v:.3g}" for v in (a0, a1, g1, g0))
        for key, (start, end) in (("fwd", (a0, a1)), ("bwd", (g1, g0))):
            margin, what = _said_margin(m.group(key), start, end)
            margins.append(margin if same else -1.0)
            details.append(f"{net.value} {key} {what}")
    return Claim("signal_flow", f"the text's numbers and verdicts match the measured RMS ({name})",
                 result.settings.seed, min(margins), "decades", "; ".join(details))


def _claim_settings(full: bool) -> dict[str, Settings]:
    """The configurations whose text is checked: page size when ``full``, else 16-pixel inputs and batch 4."""
    def at(depth, norm=True, **kw):
        cfg = cifar_config(depth, norm)
        return Settings(cfg if full else replace(cfg, input_size=16), **({} if full else {"batch": 4}), **kw)

    deep = 110 if full else 56
    return {f"resnet{deep}, BN, Kaiming, at init": at(deep),
            "resnet56, BN, Kaiming, trained": at(56, steps=50 if full else 20),
            "resnet20, BN, Kaiming, at init": at(20),
            "resnet20, no BN, PyTorch defaults": at(20, False, init=Init.DEFAULT),
            "resnet20, no BN, Kaiming": at(20, False),
            "resnet20, zero last BN": at(20, init=Init.ZERO_LAST),
            "resnet20, no BN, zero last conv": at(20, False, init=Init.ZERO_LAST)}


def claims(seeds: tuple[int, ...], full: bool) -> list:
    """What the page's text says about each network matches the measured numbers; the lesson's headline holds."""
    from resviz.claims import Claim

    out = []
    for seed in seeds:
        results = {name: measure(replace(s, seed=seed)) for name, s in _claim_settings(full).items()}
        out += [_text_claim(name, r) for name, r in results.items()]
        (deep_name, deep), (trained_name, trained) = list(results.items())[:2]
        pl, res = flows(deep)[Net.PLAIN].backward, flows(deep)[Net.RESNET].backward
        out.append(Claim("signal_flow", f"with BN at initialisation the plain twin's gradient explodes from the last "
                         f"conv back to the first (Yang et al. 2019) [{deep_name}]", seed,
                         math.log10(pl.ratio / EXPLODE), "decades", f"plain {pl.ratio:.3g}x"))
        out.append(Claim("signal_flow", f"... and the ResNet's grows at least 10x less [{deep_name}]", seed,
                         math.log10(pl.ratio / res.ratio / STEADY), "decades",
                         f"plain {pl.ratio:.3g}x, ResNet {res.ratio:.3g}x"))
        f = flows(trained)
        p = f[Net.PLAIN].backward.ratio
        out.append(Claim("signal_flow", "after some SGD steps the plain twin's gradient stays within 10x, as He "
                         f"et al. (2016, §4.1) report for trained plain nets with BN [{trained_name}]", seed,
                         min(math.log10(p * STEADY), math.log10(STEADY / p)), "decades", f"plain {p:.3g}x"))
        faster, tone = math.log10(0.9 * f[Net.PLAIN].loss / f[Net.RESNET].loss), loss_verdict(trained)[0]
        out.append(Claim("signal_flow", f"... while the ResNet fits the batch faster, and the page's loss box says so "
                         f"[{trained_name}]", seed, faster if tone is Tone.SUCCESS else min(faster, -1e-3), "decades",
                         f"loss ResNet {f[Net.RESNET].loss:.3g}, plain {f[Net.PLAIN].loss:.3g}; box: {tone.value}"))
        nobn = flows(results["resnet20, no BN, PyTorch defaults"])
        p, r = nobn[Net.PLAIN].backward, nobn[Net.RESNET].backward
        out.append(Claim("signal_flow", "without BN (PyTorch's default init) the plain twin's gradient vanishes and "
                         "the ResNet's does not", seed,
                         min(math.log10(VANISH / p.ratio) if p.ratio > 0 else 1.0, math.log10(r.ratio / VANISH)),
                         "decades", f"plain {p.ratio:.3g}x, ResNet {r.ratio:.3g}x"))
    return out
