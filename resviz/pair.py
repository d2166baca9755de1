"""The trained ResNet and plain twin that the lesion study, paths and loss landscape pages study.

A ``TrainedPair`` (CPU weights) comes from the training page (``PairSource.SESSION``) or is trained here on
the built-in images (``PairSource.BUILTIN``, made by ``resviz.builtin_pair``). ``load_pair`` makes a
``LoadedPair`` of it: both models ready on a device, with their accuracy on fresh built-in images they never
saw, and whether that accuracy is within its noise of guessing (``is_guessing``: its 95% interval reaches
1 / classes).
"""
from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from resviz import models as M
from resviz.inputs import data

EVAL_SEED = 1000  # evaluation images come from another seed than any training set: never seen in training
EVAL_IMAGES = 500  # images the pair's accuracy is measured on: at most +-4.4 accuracy points (95%)
Z95 = 1.96  # a 95% interval is the measurement +- 1.96 standard errors (normal approximation)


def accuracy_interval(acc: float, n: int) -> tuple[float, float]:
    """The 95% interval of an accuracy measured on ``n`` images: acc +- 1.96 binomial standard errors, in [0, 1]."""
    half = Z95 * math.sqrt(acc * (1 - acc) / n) if n > 0 else 1.0
    return max(0.0, acc - half), min(1.0, acc + half)


def is_guessing(acc: float, n: int, chance: float) -> bool:
    """Within the measurement's noise of guessing: the 95% interval of ``acc`` on ``n`` images reaches ``chance``."""
    return accuracy_interval(acc, n)[0] <= chance


def interval_words(acc: float, n: int) -> str:
    """'12% (95% interval 8-16% on 250 images)': an accuracy as a page says it, with its noise."""
    lo, hi = accuracy_interval(acc, n)
    return f"{acc:.0%} (95% interval {100 * lo:.0f}-{hi:.0%} on {n} images)"


class PairError(ValueError):
    """A trained pair these pages cannot test (other data, other shapes), in plain words."""


@dataclass(frozen=True, eq=False)
class TrainedPair:
    """A trained ResNet and its trained plain twin, as one page hands them to another (CPU state dicts)."""
    cfg: M.ResNetConfig  # the ResNet's config (residual=True); the twin's is models.plain_config(cfg)
    state_dict: dict
    plain_state_dict: dict
    label: str  # what the pages say about it: "ResNet-20 trained 300 steps on Built-in shapes"
    class_names: tuple[str, ...] = ()  # the classes it was trained on (disc, square, ...)
    data_name: str = ""  # the data it was trained on
    steps: int = 0
    key: str = field(default="")  # a content fingerprint: equal weights share cached results

    def __post_init__(self):
        if not self.key:
            object.__setattr__(self, "key", fingerprint(self.state_dict, self.plain_state_dict, self.label))


def fingerprint(*parts) -> str:
    """A short content hash of state dicts and strings (results are cached for the class: equal inputs share them)."""
    h = hashlib.sha1()
    for part in parts:
        if isinstance(part, dict):
            for k, v in part.items():
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(str(part).encode())
    return h.hexdigest()[:16]


class PairSource(enum.Enum):
    """Where the pair a page studies comes from."""
    SESSION = "session"  # trained on the training page, in this student's session
    BUILTIN = "builtin"  # trained here on the built-in images, kept on this machine for every student


@dataclass(frozen=True, eq=False)
class LoadedPair:
    """A trained pair ready to study: both models on a device, and how well they do on fresh built-in images."""
    trained: TrainedPair
    source: PairSource
    resnet: nn.Module  # eval mode, gradients off: shared by the pages (and maybe the class), never change it
    plain: nn.Module
    resnet_accuracy: float  # on EVAL_IMAGES fresh built-in images
    plain_accuracy: float
    eval_images: int = EVAL_IMAGES

    @property
    def cfg(self) -> M.ResNetConfig:
        return self.trained.cfg

    @property
    def key(self) -> str:
        return self.trained.key

    @property
    def label(self) -> str:
        return self.trained.label

    @property
    def chance(self) -> float:
        """The accuracy of guessing: one over the number of classes."""
        return 1 / self.cfg.num_classes

    @property
    def resnet_at_chance(self) -> bool:
        return is_guessing(self.resnet_accuracy, self.eval_images, self.chance)

    @property
    def plain_at_chance(self) -> bool:
        return is_guessing(self.plain_accuracy, self.eval_images, self.chance)

    @property
    def guessing(self) -> tuple[str, ...]:
        """The networks within noise of guessing, as the pages name them ("ResNet", "plain twin")."""
        return tuple(name for name, flag in (("ResNet", self.resnet_at_chance), ("plain twin", self.plain_at_chance))
                     if flag)

    @property
    def is_at_chance(self) -> bool:
        """Either network no better than guessing: what it shows is not what training does."""
        return self.resnet_at_chance or self.plain_at_chance


def check_pair_config(cfg: M.ResNetConfig) -> None:
    """ConfigError unless the built-in images fit ``cfg`` (2-10 classes, 1 or 3 channels, 8-64 pixels)."""
    if not 2 <= cfg.num_classes <= len(data.SHAPES):
        raise M.ConfigError(f"The built-in images have 2 to {len(data.SHAPES)} classes; this model has "
                            f"{cfg.num_classes} outputs. Pick a CIFAR preset (10 classes).")
    if cfg.in_channels not in (1, 3) or not 8 <= cfg.input_size <= 64:
        raise M.ConfigError("Training here needs 1 or 3 input channels and an input of 8 to 64 pixels; "
                            "pick a CIFAR preset (32x32).")


def check_testable(trained: TrainedPair) -> None:
    """PairError unless these pages can test ``trained`` on fresh built-in images (the data it learned)."""
    try:
        check_pair_config(trained.cfg)
    except M.ConfigError as e:
        raise PairError(f"The pair from the training page cannot be tested on the built-in images: {e}") from None
    builtin = tuple(data.SHAPES[:trained.cfg.num_classes])
    if trained.class_names and tuple(trained.class_names) != builtin:
        raise PairError(f"The pair from the training page learned {trained.data_name or 'other images'}; "
                        "these pages test on fresh built-in images, which it never saw. "
                        "Use the built-in trained pair, or train on the built-in images.")


def eval_data(cfg: M.ResNetConfig, n: int = EVAL_IMAGES) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` fresh built-in images (and labels) at the model's input size."""
    _, test, _ = data.builtin_dataset(num_classes=cfg.num_classes, n_train=1, n_test=n, size=cfg.input_size,
                                      channels=cfg.in_channels, seed=EVAL_SEED)
    return test.tensors[0], test.tensors[1]


def probe_batch(cfg: M.ResNetConfig, n: int = 32, seed: int = EVAL_SEED) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs to probe a model with: fresh built-in images where the model fits them, else seeded noise (no labels)."""
    try:
        check_pair_config(cfg)
    except M.ConfigError:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g), None
    return eval_data(cfg, n)


def build_pair(trained: TrainedPair, device: str = "cpu") -> tuple[nn.Module, nn.Module]:
    """(ResNet, plain twin) with the trained weights, in eval mode, gradients off."""
    cfg = M.with_shortcuts(trained.cfg)
    out = []
    for c, sd in ((cfg, trained.state_dict), (M.plain_config(cfg), trained.plain_state_dict)):
        model = M.build_model(c)
        model.load_state_dict(sd)
        model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        out.append(model)
    return out[0], out[1]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on (x, y)."""
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch):
        correct += (model(x[i:i + batch].to(device)).argmax(1).cpu() == y[i:i + batch].cpu()).sum().item()
    return correct / len(x)


def load_pair(trained: TrainedPair, source: PairSource, device: str = "cpu") -> LoadedPair:
    """``trained`` ready to study on ``device``, with both networks' accuracy on fresh built-in images."""
    check_testable(trained)
    resnet, plain = build_pair(trained, device)
    x, y = eval_data(trained.cfg)
    return LoadedPair(trained, source, resnet, plain, accuracy(resnet, x, y), accuracy(plain, x, y), len(x))
