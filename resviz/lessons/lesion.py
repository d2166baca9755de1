"""Lesion study (Veit, Wilber, Belongie 2016, "Residual Networks Behave Like Ensembles of Relatively
Shallow Networks", NeurIPS, Section 4.1 and Fig. 3).

Delete one block at a time at test time and measure test accuracy.

* ResNet block: its residual branch F is removed, so the block outputs only its shortcut:
  ``relu_out(shortcut(x))``, i.e. the block as if F(x) = 0. For an identity block that is relu(x) = x
  (x is already the output of a ReLU). For a downsampling block the shortcut is what remains: the
  zero-padded subsample (option A) or the 1x1 projection + BN (options B/C), so the shapes still fit.
* Plain block whose input and output shapes match: it becomes the identity.
* Plain block that changes the shape (the first block of a stage): it cannot be deleted (nothing would
  fit the next layer); it is reported as impossible.

The two networks are compared on the same blocks: those that keep the shape (both nets can lose them).
A drop is also given as a share of what the network learned (its accuracy above guessing), so that a
ResNet and a twin that learned different amounts compare fairly.
Each lesion is made on a deep copy: the caller's (possibly shared, cached) model is never touched.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from resviz import builtin_pair, pair
from resviz.claims import Claim


class LesionImpossible(ValueError):
    """A block that cannot be removed without breaking the shapes."""


class SkipOnly(nn.Module):
    """A residual block with its residual branch deleted: output = relu_out(shortcut(x))."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.downsample = block.downsample  # None = identity shortcut
        self.relu_out = block.relu_out

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)  # what the skip carries
        return self.relu_out(identity)  # F(x) is gone: 0 + shortcut


def changes_shape(block: nn.Module) -> bool:
    """True for a block whose output shape differs from its input (stride or channel change)."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    main = [m for m in convs if not (block.downsample is not None and m in list(block.downsample.modules()))]
    return block.stride != 1 or main[0].in_channels != main[-1].out_channels


def lesion(model: nn.Module, index: int) -> nn.Module:
    """A copy of ``model`` with block ``index`` (depth order) deleted, as described in the module docstring."""
    blocks = model.blocks()
    if not 0 <= index < len(blocks):
        raise IndexError(f"Block {index} does not exist; the model has {len(blocks)} blocks.")
    name = model.block_names()[index]
    if model.cfg.residual:
        replacement = SkipOnly(blocks[index])
    elif changes_shape(blocks[index]):
        raise LesionImpossible(f"{name} changes the tensor shape; a plain net cannot skip it.")
    else:
        replacement = nn.Identity()
    out = copy.deepcopy(model).eval()
    stage, j = name.split(".")
    getattr(out, stage)[int(j)] = copy.deepcopy(replacement)
    return out


@dataclass(frozen=True)
class LesionResult:
    """Test accuracy of one network with each block deleted in turn."""
    names: tuple[str, ...]  # layer1.0, layer1.1, ...
    accuracy: np.ndarray  # with block i deleted; NaN where it cannot be deleted
    possible: np.ndarray  # bool: block i can be deleted
    downsampling: np.ndarray  # bool: block i changes the shape
    intact: float  # nothing deleted


def lesion_study(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 on_progress: Callable[[float], None] | None = None) -> LesionResult:
    """Accuracy with each block deleted in turn (NaN where impossible), plus the intact model's."""
    blocks = model.blocks()
    acc = np.full(len(blocks), np.nan)
    possible = np.zeros(len(blocks), dtype=bool)
    for i in range(len(blocks)):
        try:
            acc[i] = pair.accuracy(lesion(model, i), x, y)
            possible[i] = True
        except LesionImpossible:
            pass
        if on_progress:
            on_progress((i + 1) / len(blocks))
    return LesionResult(tuple(model.block_names()), acc, possible, np.array([changes_shape(b) for b in blocks]),
                        pair.accuracy(copy.deepcopy(model).eval(), x, y))


def study_pair(p: pair.LoadedPair, n: int = pair.EVAL_IMAGES,
               on_progress: Callable[[float], None] | None = None) -> tuple[LesionResult, LesionResult]:
    """The lesion studies of ``p``'s ResNet and of its plain twin on the same ``n`` fresh built-in images."""
    x, y = pair.eval_data(p.cfg, n)
    step = on_progress or (lambda f: None)
    return (lesion_study(p.resnet, x, y, lambda f: step(f / 2)),
            lesion_study(p.plain, x, y, lambda f: step(0.5 + f / 2)))


@dataclass(frozen=True)
class LesionComparison:
    """A ResNet's and its plain twin's lesion studies, averaged over the same blocks."""
    resnet: LesionResult
    plain: LesionResult
    chance: float  # accuracy of guessing

    @property
    def comparable(self) -> np.ndarray:
        """Blocks both networks can lose: those that keep the shape."""
        return ~self.resnet.downsampling & self.resnet.possible & self.plain.possible

    def mean_drop(self, r: LesionResult) -> float:
        """Accuracy lost by deleting one comparable block, averaged over them (accuracy points / 100)."""
        return float(np.mean(r.intact - r.accuracy[self.comparable])) if self.comparable.any() else float("nan")

    def share_lost(self, r: LesionResult) -> float:
        """``mean_drop`` as a share of what ``r`` learned (its intact accuracy above guessing); NaN if nothing."""
        learned = r.intact - self.chance
        return self.mean_drop(r) / learned if learned > 0 else float("nan")

    @property
    def margin(self) -> float:
        """How far the ResNet's share lost stays below half the plain twin's (> 0: the ResNet is much more robust)."""
        return self.share_lost(self.plain) - 2 * self.share_lost(self.resnet)

    @property
    def resnet_much_more_robust(self) -> bool:
        return self.margin > 0  # NaN (a net that learned nothing) is not

    @property
    def resnet_downsampling_drop(self) -> float:
        """The ResNet's mean loss at its downsampling blocks (the plain twin cannot lose those)."""
        down = self.resnet.downsampling
        return float(np.mean(self.resnet.intact - self.resnet.accuracy[down])) if down.any() else float("nan")


CLAIM = ("deleting one ResNet block hurts much less on average than deleting one plain block "
         "(blocks that keep the shape; share of the learned accuracy lost, ResNet's at most half the plain's)")


def claims(seeds: tuple[int, ...], full: bool) -> list[Claim]:
    """The lesson's claim on the built-in trained pair of each seed (CI: a narrow ResNet-20 on 16-pixel images)."""
    out = []
    for seed in seeds:
        p = builtin_pair.claims_pair(seed, full)
        c = LesionComparison(*study_pair(p), p.chance)
        res, plain = c.share_lost(c.resnet), c.share_lost(c.plain)
        out.append(Claim("lesion", CLAIM, seed, c.margin, "share", (
            f"intact ResNet {c.resnet.intact:.0%}, plain {c.plain.intact:.0%}, chance {c.chance:.0%}; "
            f"one deletion costs the ResNet {c.mean_drop(c.resnet):.1%} ({res:.0%} of what it learned), "
            f"the plain twin {c.mean_drop(c.plain):.1%} ({plain:.0%})")))
    return out
