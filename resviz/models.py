"""Residual blocks, ResNet and plain-twin builders, shortcut options.

Module names follow torchvision's ``models/resnet.py`` (conv1, bn1, layer1..layer4,
downsample, fc) so that a torchvision state dict loads with ``strict=True``.
Variants are data: a preset is a ``ResNetConfig``; a new depth is a new list.
"""
from __future__ import annotations

import contextlib
import copy
import threading
from dataclasses import dataclass, replace

import torch
from torch import nn

from resviz.inputs import limits

BLOCKS = ("basic", "bottleneck")
SHORTCUTS = ("A", "B", "C")


@dataclass(frozen=True)
class ResNetConfig:
    """Everything that defines a network; frozen so it can key a cache."""

    block: str = "basic"  # "basic" (two 3x3) or "bottleneck" (1x1-3x3-1x1, 4x expansion)
    layers: tuple[int, ...] = (2, 2, 2, 2)  # blocks per stage; ResNet-18 by default
    widths: tuple[int, ...] = (64, 128, 256, 512)  # planes per stage (before bottleneck expansion)
    stem: str = "imagenet"  # "imagenet": 7x7/2 conv + 3x3/2 max-pool; "cifar": one 3x3/1 conv
    stem_width: int = 64  # channels after the stem
    in_channels: int = 3  # RGB
    input_size: int = 224  # height = width of the input image
    num_classes: int = 1000  # ImageNet
    norm: bool = True  # batch norm after every conv; off shows why BN matters
    shortcut: str = "B"  # A: zero-pad identity, B: 1x1 projection where shape changes, C: projection everywhere
    groups: int = 1  # ResNeXt cardinality
    width_per_group: int = 64  # ResNeXt / Wide ResNet inner width
    stride_in_1x1: bool = False  # paper's bottleneck strides its first 1x1; torchvision (v1.5) the 3x3
    residual: bool = True  # False gives the plain twin: same layers, no shortcut addition
    zero_init_residual: bool = False  # zero the last BN of each block (Goyal et al. 2017)
    name: str = "custom"  # label shown in the app

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    @property
    def depth(self) -> int:
        """Weighted layers counted the paper's way: convs on the main path + fc."""
        per_block = 3 if self.block == "bottleneck" else 2
        return 1 + per_block * sum(self.layers) + 1

    @property
    def label(self) -> str:
        base = self.name if self.name != "custom" else f"custom-{self.depth}"
        if self.block == "bottleneck" and self.stride_in_1x1:
            base += " (stride on 1x1)"
        return base if self.residual else f"plain twin of {base}"


class ConfigError(ValueError):
    """A configuration that cannot be built; the message says what to change."""


def _imagenet(name, block, layers, **kw) -> ResNetConfig:
    return ResNetConfig(name=name, block=block, layers=tuple(layers), **kw)


def _cifar(n: int) -> ResNetConfig:
    # Paper section 4.2: 6k+2 layers, stages of 16/32/64 channels, option A shortcuts.
    k = (n - 2) // 6
    return ResNetConfig(name=f"resnet{n}", block="basic", layers=(k, k, k), widths=(16, 32, 64),
                        stem="cifar", stem_width=16, input_size=32, num_classes=10, shortcut="A")


PRESETS: dict[str, ResNetConfig] = {
    "resnet18": _imagenet("resnet18", "basic", [2, 2, 2, 2]),
    "resnet34": _imagenet("resnet34", "basic", [3, 4, 6, 3]),
    "resnet50": _imagenet("resnet50", "bottleneck", [3, 4, 6, 3]),
    "resnet101": _imagenet("resnet101", "bottleneck", [3, 4, 23, 3]),
    "resnet152": _imagenet("resnet152", "bottleneck", [3, 8, 36, 3]),
    "resnext50_32x4d": _imagenet("resnext50_32x4d", "bottleneck", [3, 4, 6, 3], groups=32, width_per_group=4),
    "wide_resnet50_2": _imagenet("wide_resnet50_2", "bottleneck", [3, 4, 6, 3], width_per_group=128),
    **{f"resnet{n}": _cifar(n) for n in (20, 32, 44, 56, 110)},
}
IMAGENET_PRESETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                    "resnext50_32x4d", "wide_resnet50_2")
CIFAR_PRESETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")


def get_config(name: str, **overrides) -> ResNetConfig:
    """A preset by name (``"resnet50"``, ``"resnet56"``...), with optional field overrides."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return replace(PRESETS[name], **overrides)


def with_shortcuts(cfg: ResNetConfig, residual: bool = True) -> ResNetConfig:
    """The same network with its shortcut additions (``residual=True``) or without them (the plain twin)."""
    return replace(cfg, residual=residual)


def plain_config(cfg: ResNetConfig) -> ResNetConfig:
    """The plain twin's config: the same network with its shortcut additions removed."""
    return with_shortcuts(cfg, residual=False)


def check_config(cfg: ResNetConfig) -> None:
    """Raise ConfigError with a plain-words reason if ``cfg`` cannot be built.

    Cheap whatever it is handed: the number of stages is checked first, then each number against
    ``resviz.inputs.limits`` (one comparison each), before anything is traced, built or hashed.
    """
    if cfg.block not in BLOCKS:
        raise ConfigError(f"Block type must be one of {BLOCKS}, not {cfg.block!r}.")
    if cfg.shortcut not in SHORTCUTS:
        raise ConfigError(f"Shortcut option must be A, B or C, not {cfg.shortcut!r}.")
    if cfg.stem not in ("imagenet", "cifar"):
        raise ConfigError(f"Stem must be 'imagenet' or 'cifar', not {cfg.stem!r}.")
    if len(cfg.layers) > limits.CONFIG_STAGES:
        raise ConfigError(f"This model has {len(cfg.layers):,} stages; at most {limits.CONFIG_STAGES} are accepted "
                          "(the paper's nets have 3 or 4, and each stage after the first halves the picture).")
    if not cfg.layers or len(cfg.layers) != len(cfg.widths):
        raise ConfigError("Give one width per stage (and at least one stage).")
    if any(n < 1 for n in cfg.layers):
        raise ConfigError("Every stage needs at least one block.")
    if any(w < 1 for w in cfg.widths) or cfg.stem_width < 1 or cfg.in_channels < 1:
        raise ConfigError("Channel counts must be at least 1.")
    if cfg.num_classes < 1 or cfg.input_size < 1:
        raise ConfigError("Need at least one class and an input of at least 1x1 pixel.")
    if cfg.groups < 1 or cfg.width_per_group < 1:
        raise ConfigError("Groups and width per group must be at least 1.")
    if cfg.block == "basic" and (cfg.groups != 1 or cfg.width_per_group != 64):
        raise ConfigError("Grouped or wide convolutions need the bottleneck block (as in torchvision).")
    _check_sizes(cfg)


def _check_sizes(cfg: ResNetConfig) -> None:
    """Channels, input side and classes within ``limits``: a 26-stage net of base width 16 asks for 2^29-channel
    convolutions, whose storage size overflows torch's 64-bit count while the budget traces it."""
    if cfg.input_size > limits.CONFIG_INPUT or cfg.num_classes > limits.CONFIG_CLASSES:
        raise ConfigError(f"The input is at most {limits.CONFIG_INPUT:,} pixels a side and the classes at most "
                          f"{limits.CONFIG_CLASSES:,}, not {cfg.input_size:,} and {cfg.num_classes:,}.")
    channels = max(cfg.stem_width, cfg.in_channels, *(w * cfg.expansion for w in cfg.widths))
    if channels > limits.CONFIG_CHANNELS:
        raise ConfigError(f"This model asks for a layer of {channels:,} channels; at most {limits.CONFIG_CHANNELS:,} "
                          "are accepted (the widest torchvision ResNet has 2,048). Use a smaller width or fewer "
                          "stages.")
    for w in cfg.widths if cfg.block == "bottleneck" else ():
        inner = w * cfg.width_per_group // 64 * cfg.groups  # as Bottleneck, in integers: a huge float overflows
        if not 1 <= inner <= limits.CONFIG_CHANNELS:
            raise ConfigError(f"A bottleneck's inner width (width x width per group / 64 x groups) must be 1 to "
                              f"{limits.CONFIG_CHANNELS:,} channels, not {inner:,}.")


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1, device=None) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups, bias=False, device=device)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1, device=None) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False, device=device)


def norm_layer(channels: int, enabled: bool, device=None) -> nn.Module:
    return nn.BatchNorm2d(channels, device=device) if enabled else nn.Identity()


class PadShortcut(nn.Module):
    """Option A: parameter-free shortcut; subsample by ``stride`` and zero-pad the new channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C_in, ceil(H/s), ceil(W/s))
        pad = self.out_ch - self.in_ch
        return nn.functional.pad(x, (0, 0, 0, 0, 0, pad))  # (B, C_out, H/s, W/s), extra channels are 0

    def extra_repr(self):
        return f"{self.in_ch}->{self.out_ch}, stride={self.stride}, zero-padded"


class Add(nn.Module):
    """The residual addition F(x) + x, as a module so hooks can see both operands."""

    def forward(self, fx, x):
        return fx + x  # not in place: F(x) stays visible to hooks and autograd


def make_shortcut(cfg: ResNetConfig, in_ch: int, out_ch: int, stride: int, device=None) -> nn.Module | None:
    """The shortcut a block needs under option A, B or C; None means the identity."""
    if not cfg.residual:
        return None
    mismatch = in_ch != out_ch or stride != 1
    if cfg.shortcut == "C" or (cfg.shortcut == "B" and mismatch):
        return nn.Sequential(conv1x1(in_ch, out_ch, stride, device), norm_layer(out_ch, cfg.norm, device))
    if cfg.shortcut == "A" and mismatch:
        if out_ch < in_ch:
            raise ConfigError("Option A can only add channels (zero-padding); use B or C to reduce them.")
        return PadShortcut(in_ch, out_ch, stride)
    return None


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; the paper's block for ResNet-18/34 and the CIFAR nets."""

    expansion = 1

    def __init__(self, cfg: ResNetConfig, in_ch: int, planes: int, stride: int = 1, device=None):
        super().__init__()
        out_ch = planes
        self.conv1 = conv3x3(in_ch, planes, stride, device=device)
        self.bn1 = norm_layer(planes, cfg.norm, device)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, out_ch, device=device)
        self.bn2 = norm_layer(out_ch, cfg.norm, device)
        self.downsample = make_shortcut(cfg, in_ch, out_ch, stride, device)
        self.add = Add()
        self.relu_out = nn.ReLU()
        self.residual = cfg.residual
        self.stride = stride

    def forward(self, x):
        out = self.conv1(x)  # (B, C, H/s, W/s)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)  # (B, C, H/s, W/s)
        out = self.bn2(out)  # F(x)
        if self.residual:
            identity = x if self.downsample is None else self.downsample(x)  # x, reshaped if needed
            out = self.add(out, identity)  # F(x) + x
        return self.relu_out(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (4x); the block of ResNet-50/101/152."""

    expansion = 4

    def __init__(self, cfg: ResNetConfig, in_ch: int, planes: int, stride: int = 1, device=None):
        super().__init__()
        width = int(planes * (cfg.width_per_group / 64.0)) * cfg.groups
        out_ch = planes * self.expansion
        s1, s3 = (stride, 1) if cfg.stride_in_1x1 else (1, stride)
        # Registered in execution order: the shape trace walks modules in this order.
        self.conv1 = conv1x1(in_ch, width, s1, device)
        self.bn1 = norm_layer(width, cfg.norm, device)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(width, width, s3, cfg.groups, device)
        self.bn2 = norm_layer(width, cfg.norm, device)
        self.relu2 = nn.ReLU()
        self.conv3 = conv1x1(width, out_ch, device=device)
        self.bn3 = norm_layer(out_ch, cfg.norm, device)
        self.downsample = make_shortcut(cfg, in_ch, out_ch, stride, device)
        self.add = Add()
        self.relu_out = nn.ReLU()
        self.residual = cfg.residual
        self.stride = stride

    def forward(self, x):
        out = self.conv1(x)  # (B, C/4, H, W): reduce channels
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)  # (B, C/4, H/s, W/s): the 3x3 works on few channels
        out = self.bn2(out)
        out = self.relu2(out)
        out = self.conv3(out)  # (B, C, H/s, W/s): expand channels 4x
        out = self.bn3(out)  # F(x)
        if self.residual:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.add(out, identity)  # F(x) + x
        return self.relu_out(out)


class ResNet(nn.Module):
    """A ResNet (or, with ``cfg.residual=False``, its plain twin) built from a ResNetConfig."""

    def __init__(self, cfg: ResNetConfig, device: str | torch.device | None = None):
        """``device="meta"`` builds a shapes-only skeleton (for tracing) without allocating any weights."""
        super().__init__()
        check_config(cfg)
        self.cfg = cfg
        block = Bottleneck if cfg.block == "bottleneck" else BasicBlock
        imagenet = cfg.stem == "imagenet"
        # Registered in execution order: the shape trace walks modules in this order.
        self.conv1 = (nn.Conv2d(cfg.in_channels, cfg.stem_width, 7, stride=2, padding=3, bias=False, device=device)
                      if imagenet else conv3x3(cfg.in_channels, cfg.stem_width, device=device))
        self.bn1 = norm_layer(cfg.stem_width, cfg.norm, device)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if imagenet else nn.Identity()
        in_ch = cfg.stem_width
        self.stage_names = []
        for i, (n, planes) in enumerate(zip(cfg.layers, cfg.widths)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(block(cfg, in_ch, planes, stride if j == 0 else 1, device))
                in_ch = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            self.stage_names.append(f"layer{i + 1}")
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_ch, cfg.num_classes, device=device)
        self.init_weights(cfg.zero_init_residual)

    def init_weights(self, zero_init_residual: bool = False, generator: torch.Generator | None = None):
        """torchvision's initialisation: Kaiming-normal convs, BN weight 1 and bias 0, PyTorch's default fc.

        With a ``generator`` every weight is drawn from it alone, never from torch's global RNG.
        """
        if self.fc.weight.is_meta:
            return  # a shapes-only skeleton (tracing) has no values to initialise
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if generator is not None:  # nn.Linear.reset_parameters, with our generator
            nn.init.kaiming_uniform_(self.fc.weight, a=5 ** 0.5, generator=generator)
            bound = 1 / self.fc.in_features ** 0.5
            nn.init.uniform_(self.fc.bias, -bound, bound, generator=generator)
        if zero_init_residual:
            for m in self.blocks():
                last_bn = m.bn3 if isinstance(m, Bottleneck) else m.bn2
                if isinstance(last_bn, nn.BatchNorm2d):
                    nn.init.zeros_(last_bn.weight)

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, name) for name in self.stage_names]

    def blocks(self) -> list[nn.Module]:
        """Every residual block in depth order."""
        return [b for stage in self.stages() for b in stage]

    def block_names(self) -> list[str]:
        """``layer1.0``, ``layer1.1``, ... in depth order (the names of ``blocks()``)."""
        return [f"{stage}.{j}" for stage, seq in zip(self.stage_names, self.stages()) for j in range(len(seq))]

    def forward(self, x):
        x = self.conv1(x)  # (B, 64, H/2, W/2) for ImageNet; (B, 16, H, W) for CIFAR
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)  # (B, 64, H/4, W/4) for ImageNet
        for stage in self.stages():
            x = stage(x)  # each stage after the first halves H, W
        x = self.avgpool(x)  # (B, C, 1, 1)
        x = torch.flatten(x, 1)
        return self.fc(x)  # (B, num_classes)


_RNG_LOCK = threading.RLock()  # many students share one process: seeded sections must not interleave


@contextlib.contextmanager
def seeded(seed: int | None = None):
    """Run a block with torch's global RNG seeded (or just guarded), restored after, one thread at a time.

    Layer constructors draw from the global RNG, so every construction that must be reproducible (and
    every ``fork_rng``) goes through here; otherwise another student's thread could draw in between.
    """
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def build_model(cfg: ResNetConfig | str, device: str | torch.device | None = None,
                seed: int | None = None, **overrides) -> ResNet:
    """Build a ResNet (or plain twin) from a config or a preset name, on ``device`` (default CPU).

    With ``seed``, the weights depend on the seed alone (not on what other threads do meanwhile).
    """
    if isinstance(cfg, str):
        cfg = get_config(cfg, **overrides)
    elif overrides:
        cfg = replace(cfg, **overrides)
    with seeded():  # constructors draw from the global RNG; keep it as it was
        model = ResNet(cfg)
    if seed is not None:
        model.init_weights(cfg.zero_init_residual, torch.Generator().manual_seed(seed))
    return model.to(device) if device is not None else model


def plain_twin(model: ResNet) -> ResNet:
    """The same network with its shortcut additions removed, sharing every weight it can.

    Projection shortcuts have no counterpart in a plain net, so their weights are dropped.
    """
    with seeded():  # its fresh weights are overwritten; keep the global RNG as it was
        twin = ResNet(plain_config(model.cfg))
    device = next(model.parameters()).device
    twin.load_state_dict(copy.deepcopy(model.state_dict()), strict=False)
    return twin.to(device)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def pick_device(prefer: str | None = None) -> torch.device:
    """``prefer`` if given (and available), else cuda, then mps, then cpu."""
    if prefer and prefer != "auto":
        dev = torch.device(prefer)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("CUDA was asked for but no CUDA GPU is available; choose cpu.")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise ConfigError("MPS was asked for but this machine has no Apple GPU; choose cpu.")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def available_devices() -> list[str]:
    """Devices this machine can run on, best first."""
    devs = []
    if torch.cuda.is_available():
        devs.append("cuda")
    if torch.backends.mps.is_available():
        devs.append("mps")
    return devs + ["cpu"]
