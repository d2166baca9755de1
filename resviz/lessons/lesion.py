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

Every accuracy is measured on n test images, so it carries noise: a binomial standard error
sqrt(a (1 - a) / n), +-6 points (95%) at a = 50% on 250 images. The page's verdict (``verdict``) is made only
when both networks are above guessing by more than that noise, and only when the difference it reports is
larger than its own 95% interval; otherwise it says why there is no verdict.
"""
from __future__ import annotations

import copy
import enum
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from resviz import builtin_pair, pair, prepared
from resviz.claims import Claim
from resviz.lessons.training import Tone


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
    """True for a block whose output shape differs from its input: a stride, or other channels out than in (a
    bottleneck's first block keeps the size and quadruples the channels)."""
    shortcut = set(block.downsample.modules()) if block.downsample is not None else set()
    main = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m not in shortcut]  # F's convs, in order
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
    images: int  # how many test images every accuracy above is measured on (its noise)


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
                        pair.accuracy(copy.deepcopy(model).eval(), x, y), len(x))


@prepared.kept_on_disk(lambda p, n=pair.EVAL_IMAGES, on_progress=None: ("lesion", p.key, n))
def study_pair(p: pair.LoadedPair, n: int = pair.EVAL_IMAGES,
               on_progress: Callable[[float], None] | None = None) -> tuple[LesionResult, LesionResult]:
    """The lesion studies of ``p``'s ResNet and of its plain twin on the same ``n`` fresh built-in images."""
    x, y = pair.eval_data(p.cfg, n)
    step = on_progress or (lambda f: None)
    return (lesion_study(p.resnet, x, y, lambda f: step(f / 2)),
            lesion_study(p.plain, x, y, lambda f: step(0.5 + f / 2)))


NOTICEABLE = 0.25  # a deletion that costs the ResNet more than a quarter of what it learned, beyond the noise, is
#                   far from Veit et al.'s "no noticeable change" (Section 4.1, Fig. 3a)


def _variance(acc: float, n: int) -> float:
    """The binomial variance of an accuracy measured on ``n`` images."""
    return acc * (1 - acc) / n


@dataclass(frozen=True)
class Share:
    """What one network loses, as a share of what it learned (its accuracy above guessing), with its noise."""
    raw: float  # (intact - lesioned) / (intact - guessing): below 0 if the deletion raised accuracy; NaN: nothing
    noise: float  # half-width of its 95% interval (first-order propagation of the accuracies' standard errors)

    @property
    def value(self) -> float:
        """``raw`` clipped to [0, 1]: a deletion cannot cost less than nothing nor more than all that was learned."""
        return self.raw if math.isnan(self.raw) else min(1.0, max(0.0, self.raw))

    @property
    def clipped(self) -> bool:
        return not math.isnan(self.raw) and self.raw != self.value

    def words(self) -> str:
        return "—" if math.isnan(self.raw) else f"{self.value:.0%} ± {100 * self.noise:.0f}"


def share_of(intact: float, lesioned: float, lesioned_sd: float, chance: float, n: int) -> Share:
    """The share of what a network learned that a deletion costs, from accuracies on ``n`` images.

    ``s = (I - M) / (I - c)``; its standard error by first-order propagation, ``sqrt((dI (M - c) / L^2)^2 +
    (dM / L)^2)`` with L = I - c, the intact accuracy's binomial error dI and the lesioned one's dM (for a mean
    over blocks, the mean of their errors: the largest it can be, as the blocks are measured on the same images).
    """
    learned = intact - chance
    if learned <= 0:
        return Share(float("nan"), float("nan"))
    se = math.hypot(math.sqrt(_variance(intact, n)) * (lesioned - chance) / learned ** 2, lesioned_sd / learned)
    return Share((intact - lesioned) / learned, pair.Z95 * se)


class Finding(enum.Enum):
    """What the Lesion page concludes from one comparison."""
    GUESSING = "a network is within noise of guessing: no verdict"
    NO_BLOCKS = "no block both networks can lose: no verdict"
    INSIDE_NOISE = "the difference is inside its 95% interval: no verdict"
    AS_IN_PAPER = "the ResNet loses less than half the plain twin's share, beyond the noise"
    BLOCKS_MATTER = "as in the paper on average, but some ResNet blocks cost much more than the paper's"
    NOT_THE_PAPER = "the ResNet does not lose less than half the plain twin's share, beyond the noise"

    @property
    def tone(self) -> Tone:
        """The box it is shown in: a claim as in the paper is green, one against it yellow, no verdict blue."""
        return {Finding.AS_IN_PAPER: Tone.SUCCESS, Finding.BLOCKS_MATTER: Tone.WARNING,
                Finding.NOT_THE_PAPER: Tone.WARNING}.get(self, Tone.INFO)


@dataclass(frozen=True)
class Verdict:
    finding: Finding
    text: str

    @property
    def tone(self) -> Tone:
        return self.finding.tone


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

    @property
    def images(self) -> int:
        return self.resnet.images

    def mean_drop(self, r: LesionResult) -> float:
        """Accuracy lost by deleting one comparable block, averaged over them (accuracy points / 100)."""
        return float(np.mean(r.intact - r.accuracy[self.comparable])) if self.comparable.any() else float("nan")

    def share(self, r: LesionResult) -> Share:
        """``mean_drop`` as a share of what ``r`` learned (its intact accuracy above guessing), with its noise."""
        if not self.comparable.any():
            return Share(float("nan"), float("nan"))
        kept = r.accuracy[self.comparable]
        sd = float(np.mean(np.sqrt(kept * (1 - kept) / r.images)))
        return share_of(r.intact, float(np.mean(kept)), sd, self.chance, r.images)

    def share_lost(self, r: LesionResult) -> float:
        """The share in [0, 1] (``Share.value``); NaN if ``r`` learned nothing."""
        return self.share(r).value

    @property
    def margin(self) -> float:
        """How far the ResNet's share lost stays below half the plain twin's (> 0: the ResNet is much more robust)."""
        return self.share_lost(self.plain) - 2 * self.share_lost(self.resnet)

    @property
    def margin_noise(self) -> float:
        """Half-width of the margin's 95% interval (the two shares' errors combined in quadrature)."""
        return math.hypot(self.share(self.plain).noise, 2 * self.share(self.resnet).noise)

    @property
    def resnet_much_more_robust(self) -> bool:
        """The margin is above 0 by more than its noise (NaN, a net that learned nothing, is not)."""
        return self.margin - self.margin_noise > 0

    def guessing(self) -> tuple[str, ...]:
        """The networks whose intact accuracy is within the measurement's noise of guessing."""
        return tuple(name for name, r in (("ResNet", self.resnet), ("plain twin", self.plain))
                     if pair.is_guessing(r.intact, r.images, self.chance))

    def blocks_that_matter(self) -> list[tuple[str, float, Share]]:
        """ResNet blocks that keep the shape whose deletion costs more than ``NOTICEABLE`` of what it learned,
        beyond the noise: (name, accuracy without it, share)."""
        r, out = self.resnet, []
        for i in np.flatnonzero(~r.downsampling & r.possible):
            a = float(r.accuracy[i])
            s = share_of(r.intact, a, math.sqrt(_variance(a, r.images)), self.chance, r.images)
            if s.raw - s.noise > NOTICEABLE:
                out.append((r.names[i], a, s))
        return out

    @property
    def resnet_downsampling_drop(self) -> float:
        """The ResNet's mean loss at its downsampling blocks (the plain twin cannot lose those)."""
        down = self.resnet.downsampling
        return float(np.mean(self.resnet.intact - self.resnet.accuracy[down])) if down.any() else float("nan")


PAPER = ("Veit et al. (2016, Section 4.1, Fig. 3a) deleted each block of a trained 110-layer ResNet (54 blocks) on "
         "CIFAR-10: only the downsampling blocks made a modest difference, no other deletion a noticeable change "
         "in test error")


def verdict(c: LesionComparison, pair_guessing: tuple[str, ...] = ()) -> Verdict:
    """What the page may conclude, in one box: no verdict when a network is within noise of guessing (on these
    images, or ``pair_guessing``: the pair's own check) or when the margin is inside its noise; else the paper's
    picture or not, and the ResNet blocks that matter far more than in the paper."""
    n = c.images
    guessing = [name for name in ("ResNet", "plain twin") if name in pair_guessing or name in c.guessing()]
    if guessing:
        return Verdict(Finding.GUESSING, _guessing_text(c, guessing))
    if not c.comparable.any():
        return Verdict(Finding.NO_BLOCKS, "**No verdict:** no block keeps its shape in both networks, so there is "
                                          "no block both can lose to compare.")
    res, plain = c.share(c.resnet), c.share(c.plain)
    costs = (f"one deletion costs the ResNet **{res.words()}** of what it learned (its accuracy above guessing), "
             f"the plain twin **{plain.words()}** (averages over the {int(c.comparable.sum())} blocks both can "
             f"lose; ± is a 95% interval on {n} images).{_clipped_text(c)}")
    matter = c.blocks_that_matter()
    if c.margin - c.margin_noise > 0:
        if matter:
            return Verdict(Finding.BLOCKS_MATTER, f"**Partly as in the paper.** On average {costs} The ResNet's "
                                                  f"share is less than half the plain twin's, beyond the noise. "
                                                  f"But {_matter_text(c, matter)}")
        return Verdict(Finding.AS_IN_PAPER, f"**As in the paper:** {costs} The ResNet's share is less than half "
                                            "the plain twin's, by more than the measurement's noise.")
    extra = f" Whatever the average, {_matter_text(c, matter)}" if matter else ""
    if c.margin + c.margin_noise < 0:
        return Verdict(Finding.NOT_THE_PAPER, f"**Not the paper's picture:** {costs} The ResNet's share is not "
                                              f"below half the plain twin's, beyond the noise. {PAPER}; this pair "
                                              f"has {len(c.resnet.names)} blocks.{extra}")
    return Verdict(Finding.INSIDE_NOISE, f"**No verdict:** {costs} Whether the ResNet's share is below half the "
                                         "plain twin's is inside the measurement's noise. More test images, or a "
                                         f"pair that learned more, narrow the intervals.{extra}")


def _guessing_text(c: LesionComparison, guessing: list[str]) -> str:
    said = []
    for name in guessing:
        r = c.resnet if name == "ResNet" else c.plain
        if pair.is_guessing(r.intact, r.images, c.chance):
            said.append(f"the {name} gets {pair.interval_words(r.intact, r.images)}")
        else:
            said.append(f"the {name} is within noise of guessing on the pair's own check above")
    return (f"**No verdict:** {' and '.join(said)}: within the measurement's noise of guessing ({c.chance:.0%}). "
            "The share of what a network learned means nothing for a network that has not measurably learned. "
            "Train the pair longer or study another pair (the pair picker above); more test images narrow the "
            "interval.")


def _clipped_text(c: LesionComparison) -> str:
    notes = []
    for name, r in (("ResNet", c.resnet), ("plain twin", c.plain)):
        s = c.share(r)
        if s.clipped and s.raw < 0:
            notes.append(f" For the {name} the deletions raised accuracy on average ({-c.mean_drop(r):.1%}), "
                         "counted as losing nothing (0%).")
        elif s.clipped:
            notes.append(f" The {name} fell below guessing on average without one block, counted as losing all "
                         "it learned (100%).")
    return "".join(notes)


def _matter_text(c: LesionComparison, matter: list[tuple[str, float, Share]]) -> str:
    """'deleting layer1.0 drops the ResNet from 75% to 44% (...): here the first block matters far more ...'"""
    said = ", ".join(f"{name} to {a:.0%} ({s.words()})" for name, a, s in matter[1:])
    name, a, s = matter[0]
    first = [m[0] for m in matter] == list(c.resnet.names[:len(matter)])
    which = ("the first blocks matter" if len(matter) > 1 else "the first block matters") if first else (
        "these blocks matter" if len(matter) > 1 else "this block matters")
    return (f"deleting {name} drops the ResNet from {c.resnet.intact:.0%} to {a:.0%} ({s.words()} of what it "
            f"learned){f', {said}' if said else ''}: here {which} far more than in the paper (more than "
            f"{NOTICEABLE:.0%} of what it learned, beyond the noise). {PAPER}.")


CLAIM = ("deleting one ResNet block hurts much less on average than deleting one plain block "
         "(blocks that keep the shape; share of the learned accuracy lost, ResNet's at most half the plain's, "
         "beyond the 95% interval)")
CLAIM_LEARNED = "both networks of the pair are above guessing by more than the 95% interval of their accuracy"


def claims(seeds: tuple[int, ...], full: bool) -> list[Claim]:
    """The lesson's claims on the CI pair of each seed (a narrow ResNet-20 on 16-pixel images) and on each shipped
    pair, or with ``full`` on the pairs scripts/train_pairs.py trains from each seed: the guard the page's verdict
    needs (both nets clearly above guessing), then the verdict's margin beyond its noise. On a pair that guesses the
    page makes no claim, so neither holds here.

    Measured on the shipped ResNet-20 pair (seed 0, 500 fresh images): ResNet 97.4%, plain twin 97.2%; one deletion
    costs the ResNet 17% ± 4 of what it learned, the plain twin 97% ± 3: margin 0.63 ± 0.08 (the page: "partly as
    in the paper", its first block matters far more than the paper's)."""
    out = []
    for label, seed, p in builtin_pair.deep_claims_pairs(seeds, full):
        c = LesionComparison(*study_pair(p), p.chance)
        lowest = min(pair.accuracy_interval(r.intact, r.images)[0] for r in (c.resnet, c.plain))
        out.append(Claim("lesion", CLAIM_LEARNED, seed, lowest - c.chance, "accuracy", (
            f"ResNet {pair.interval_words(c.resnet.intact, c.images)}, plain "
            f"{pair.interval_words(c.plain.intact, c.images)}, chance {c.chance:.0%}"), label))
        v, res, plain = verdict(c, p.guessing), c.share(c.resnet), c.share(c.plain)
        margin = -1.0 if v.finding is Finding.GUESSING else c.margin - c.margin_noise  # no claim on a guessing pair
        out.append(Claim("lesion", CLAIM, seed, margin, "share", (
            f"margin {c.margin:.2f} ± {c.margin_noise:.2f}; one deletion costs the ResNet {c.mean_drop(c.resnet):.1%} "
            f"({res.words()} of what it learned), the plain twin {c.mean_drop(c.plain):.1%} ({plain.words()}); "
            f"verdict: {v.finding.name}"), label))
    return out
