"""Loss landscapes (Li, Xu, Taylor, Studer, Goldstein 2018, "Visualizing the Loss Landscape of Neural
Nets", NeurIPS; Section 6 and Fig. 5 compare ResNets with their plain twins).

Around trained weights w we evaluate the loss at w + a*d1 (1-D) or w + a*d1 + b*d2 (2-D) for random
directions d1, d2. Raw random directions are meaningless across layers of different scale, so the
paper *filter-normalises* them: each filter d[i] (one output channel of a conv, one row of a linear
layer) is rescaled to the norm of the matching filter w[i]. Biases and batch-norm parameters get a zero
direction (the paper's ``ignore='biasbn'``). The model is evaluated in eval mode (batch norm uses its
running statistics) through ``torch.func.functional_call``, so the caller's model is never changed.

How non-convex a 2-D slice is, in one number (``Grid.nonconvexity``), as Li et al. measure it (Section 6,
Fig. 7): at each grid point the ratio |lambda_min / lambda_max| of the Hessian's extreme eigenvalues, near 0 where
the surface curves up (convex), large where it curves down as much as up (chaotic). They take the Hessian of the
full loss; we take the slice's own 2-D Hessian (central finite differences of the loss on the grid, so it costs no
evaluation beyond the grid itself). Its curvatures are weighted averages of the full Hessian's eigenvalues (Li et
al., same section): a downward bend in the slice is a real non-convexity, a convex slice does not prove the full
loss convex. A point where the slice barely curves at all (a flat plateau) counts as convex, not rough (``FLAT``).
One random slice is one draw: the page's verdict compares the two nets on ``DIRECTIONS`` slices and gives one only
when every slice agrees by ``MARGIN``, and none for a pair that guesses.

The finer grid is slow: it is a shared run (``resviz.runs``) that goes on while someone watches it and stops when
nobody does; once done it stays in the disk cache for every later visit.
"""
from __future__ import annotations

import copy
import enum
from dataclasses import dataclass
from typing import Callable, Generator

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from resviz import builtin_pair, disk_cache, pair, prepared, runs
from resviz.claims import Claim
from resviz.lessons.training import Tone

FLAT = 0.1  # curvature (loss per squared filter norm) below which a point counts as flat: over the whole span of
#            +-1 it changes the loss by less than 0.05 (a plateau where the loss barely changes is not rough)
COARSE, FINE = 7, 21  # grid points per side: the live grid, and the finer one computed in the background
BATCH, FINE_BATCH = 32, 256  # images the live grid and the finer one are evaluated on
Directions = dict[str, torch.Tensor]


def random_direction(model: nn.Module, seed: int = 0) -> Directions:
    """A filter-normalised random direction: one tensor per parameter name (zero for biases and BN)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, w in model.named_parameters():
        d = torch.randn(w.shape, generator=gen, dtype=torch.float32).to(w.device, w.dtype)
        if w.dim() <= 1:
            d.zero_()  # biases and BN weights: not moved (Li et al.'s ignore='biasbn')
        else:
            w_norm = w.detach().flatten(1).norm(dim=1)  # one norm per filter (output channel)
            d_norm = d.flatten(1).norm(dim=1)
            d = d * (w_norm / (d_norm + 1e-10)).view(-1, *[1] * (w.dim() - 1))
        out[name] = d
    return out


def _evaluate(model: nn.Module, params: dict, x: torch.Tensor, y: torch.Tensor, batch: int = 256):
    """Mean cross-entropy loss and accuracy of ``model`` with ``params`` swapped in."""
    buffers = dict(model.named_buffers())
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = functional_call(model, {**params, **buffers}, (x[i:i + batch],))
            loss += nn.functional.cross_entropy(logits, y[i:i + batch], reduction="sum").item()
            correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    return loss / len(x), correct / len(x)


@dataclass(frozen=True)
class Grid:
    """Loss and accuracy on a 1-D line (``loss[i]`` at ``alphas[i]``) or a 2-D grid (``loss[j, i]`` at beta_j, alpha_i)."""
    alphas: np.ndarray
    betas: np.ndarray  # [0.] on a 1-D line
    loss: np.ndarray  # mean cross-entropy
    acc: np.ndarray
    dims: int

    @property
    def centre_loss(self) -> float:
        """The loss at the trained weights (the middle of the grid)."""
        return float(self.loss[len(self.loss) // 2] if self.dims == 1 else
                     self.loss[len(self.betas) // 2, len(self.alphas) // 2])

    def curvatures(self) -> tuple[np.ndarray, np.ndarray]:
        """The two eigenvalues (lower, upper) of the slice's 2-D Hessian of the loss at each interior grid point
        (central finite differences; an equally spaced square grid)."""
        if self.dims != 2 or min(self.loss.shape) < 3:
            raise ValueError("Curvature needs a 2-D grid of at least 3 x 3 points.")
        z, h = self.loss, float(self.alphas[1] - self.alphas[0])
        d_aa = (z[1:-1, 2:] - 2 * z[1:-1, 1:-1] + z[1:-1, :-2]) / h**2
        d_bb = (z[2:, 1:-1] - 2 * z[1:-1, 1:-1] + z[:-2, 1:-1]) / h**2
        d_ab = (z[2:, 2:] - z[2:, :-2] - z[:-2, 2:] + z[:-2, :-2]) / (4 * h**2)
        mid, half = (d_aa + d_bb) / 2, np.hypot((d_aa - d_bb) / 2, d_ab)
        return mid - half, mid + half

    def negative_curvature(self) -> np.ndarray:
        """Li et al.'s |lambda_min / lambda_max| at each interior point, of the slice's 2-D Hessian: how much the
        slice curves down against how much it curves up, in [0, 1] (0: curves up both ways, or flat; 1: curves
        down at least as much as up)."""
        low, high = self.curvatures()
        biggest = np.maximum(np.abs(low), np.abs(high))
        ratio = np.maximum(0.0, -low) / np.maximum(biggest, 1e-12)
        return np.where(biggest > FLAT, ratio, 0.0)

    def nonconvexity(self) -> float:
        """``negative_curvature`` averaged over the slice's interior points (0 = convex everywhere)."""
        return float(np.mean(self.negative_curvature()))


@dataclass(frozen=True)
class PairGrids:
    """The same slice for a ResNet and its plain twin (same images, same directions' seed)."""
    resnet: Grid
    plain: Grid

    def as_dict(self) -> dict:
        """Flat numpy arrays for the disk cache."""
        return {"alphas": self.resnet.alphas, "betas": self.resnet.betas, "dims": self.resnet.dims,
                "res_loss": self.resnet.loss, "res_acc": self.resnet.acc,
                "plain_loss": self.plain.loss, "plain_acc": self.plain.acc}

    @classmethod
    def from_dict(cls, d: dict) -> "PairGrids":
        common = (d["alphas"], d["betas"])
        return cls(Grid(*common, d["res_loss"], d["res_acc"], int(d["dims"])),
                   Grid(*common, d["plain_loss"], d["plain_acc"], int(d["dims"])))


def grid_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, span: float, dims: int,
               seed: int) -> Generator[None, None, Grid]:
    """``loss_grid`` one evaluation at a time: yields after each, returns the Grid (closing it stops early)."""
    if steps < 2 or dims not in (1, 2):
        raise ValueError("Need at least 2 steps, and 1 or 2 dimensions.")
    was_training = model.training
    model.eval()
    try:
        base = {n: p.detach() for n, p in model.named_parameters()}
        d1 = random_direction(model, seed)
        d2 = random_direction(model, seed + 1) if dims == 2 else None
        alphas = np.linspace(-span, span, steps)
        betas = alphas if dims == 2 else np.zeros(1)
        loss = np.full((len(betas), steps), np.nan)
        acc = np.full_like(loss, np.nan)
        for j, b in enumerate(betas):
            for i, a in enumerate(alphas):
                params = {n: w + a * d1[n] + (b * d2[n] if d2 is not None else 0) for n, w in base.items()}
                loss[j, i], acc[j, i] = _evaluate(model, params, x, y)
                yield
    finally:
        model.train(was_training)
    return Grid(alphas, betas, loss if dims == 2 else loss[0], acc if dims == 2 else acc[0], dims)


def loss_grid(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 11, span: float = 1.0,
              dims: int = 2, seed: int = 0) -> Grid:
    """Loss (and accuracy) on a ``steps``-point (1-D) or ``steps`` x ``steps`` (2-D) grid over [-span, span].

    Directions come from ``seed`` (d1) and ``seed + 1`` (d2).
    """
    gen = grid_steps(model, x, y, steps, span, dims, seed)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def pair_grid_records(resnet: nn.Module, plain: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int,
                      span: float, dims: int = 2, seed: int = 0) -> Generator[dict, None, PairGrids]:
    """Loss grids of a ResNet and its plain twin on the same batch and grid: yields ``{"step", "steps"}`` after
    each evaluation (a shared run's records), returns the PairGrids."""
    total, done, grids = 2 * steps ** dims, 0, []
    for model in (resnet, plain):
        gen = grid_steps(copy.deepcopy(model), x, y, steps, span, dims, seed)
        while True:
            try:
                next(gen)
            except StopIteration as finished:
                grids.append(finished.value)
                break
            done += 1
            yield {"step": done, "steps": total}
    return PairGrids(*grids)


def pair_grids(resnet: nn.Module, plain: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, span: float,
               dims: int = 2, seed: int = 0, on_progress: Callable[[float], None] | None = None) -> PairGrids:
    """``pair_grid_records`` run to its end, telling ``on_progress`` the fraction done."""
    gen = pair_grid_records(resnet, plain, x, y, steps, span, dims, seed)
    while True:
        try:
            rec = next(gen)
        except StopIteration as finished:
            return finished.value
        if on_progress:
            on_progress(rec["step"] / rec["steps"])


def _batch(p: pair.LoadedPair, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = pair.eval_data(p.cfg, FINE_BATCH)  # the live grids use the first images of the finer grid's batch
    device = next(p.resnet.parameters()).device
    return x[:n].to(device), y[:n].to(device)


@prepared.kept_on_disk(lambda p, span, seed, on_progress=None: ("landscape-1d", p.key, span, seed))
def line(p: pair.LoadedPair, span: float, seed: int, on_progress=None) -> PairGrids:
    """The live 1-D slice: ``2 * COARSE - 1`` points on ``BATCH`` images."""
    return pair_grids(p.resnet, p.plain, *_batch(p, BATCH), 2 * COARSE - 1, span, 1, seed, on_progress)


@prepared.kept_on_disk(lambda p, span, seed, on_progress=None: ("landscape-2d", p.key, span, seed))
def coarse_grids(p: pair.LoadedPair, span: float, seed: int, on_progress=None) -> PairGrids:
    """The live 2-D slice: ``COARSE`` x ``COARSE`` on ``BATCH`` images."""
    return pair_grids(p.resnet, p.plain, *_batch(p, BATCH), COARSE, span, 2, seed, on_progress)


# --- the verdict: several random slices, one margin ----------------------------------------------------------
SHALLOW, DEEP = 20, 56  # Li et al. (Fig. 5) find both landscapes smooth at 20 layers, the plain twin's chaotic at
#                        56 and 110; they show no depth between
DIRECTIONS = 5  # random slices the verdict compares the nets on; one slice is one draw, and others can reverse it
MARGIN = 0.05  # a slice counts for a verdict when the two nets' non-convexity differs by more than this
SMOOTH = 0.2  # "both nearly convex": on every slice, each net's non-convexity is at most this


class Finding(enum.Enum):
    """What the slices show, before it is put in words."""
    GUESSING = "a network is no better than guessing"
    PLAIN_ROUGHER = "the plain twin is less convex on every slice, beyond the margin"
    RESNET_ROUGHER = "the ResNet is less convex on every slice, beyond the margin"
    BOTH_SMOOTH = "both nearly convex on every slice"
    DISAGREE = "the slices disagree on which net is less convex"
    INSIDE_MARGIN = "the slices agree, but not all beyond the margin"


MEASURED = (f"Non-convexity of a slice: at each inner grid point, how much the loss curves down against how much it "
            "curves up, |λmin/λmax| of the slice's own 2-D Hessian (finite differences of the loss on the grid; Li et "
            "al., Section 6, Fig. 7 map this ratio for the full Hessian), averaged over the slice: 0 = curves up "
            f"everywhere, 1 = down at least as much as up everywhere. A point that barely curves (below {FLAT:g} "
            f"loss per squared filter norm) counts as flat, not rough. Each of the {DIRECTIONS} slices takes its own "
            f"two random directions, on a {COARSE}×{COARSE} grid on the same {BATCH} images for both nets; the "
            f"page gives a verdict only when all {DIRECTIONS} agree, each by more than {MARGIN:g}.")


def guessing(p: pair.LoadedPair) -> tuple[str, ...]:
    """The nets of ``p`` no better than guessing, as the page names them."""
    return tuple(name for name, flag in (("ResNet", p.resnet_at_chance), ("plain twin", p.plain_at_chance)) if flag)


def direction_seeds(seed: int) -> tuple[int, ...]:
    """The verdict's slices: each takes two direction seeds (``s`` and ``s + 1``), the first is the one shown."""
    return tuple(seed + 2 * k for k in range(DIRECTIONS))


@dataclass(frozen=True)
class DirectionStudy:
    """Both nets' non-convexity on several random slices (same images, same grid, same directions for both)."""
    seeds: tuple[int, ...]  # the first direction seed of each slice
    resnet: tuple[float, ...]
    plain: tuple[float, ...]
    steps: int = COARSE  # grid points per side
    images: int = BATCH

    @property
    def differences(self) -> np.ndarray:
        """Plain twin minus ResNet, per slice (> 0: the plain twin's slice is less convex)."""
        return np.asarray(self.plain) - np.asarray(self.resnet)

    def finding(self) -> Finding:
        d = self.differences
        if np.all(d > MARGIN):
            return Finding.PLAIN_ROUGHER
        if np.all(d < -MARGIN):
            return Finding.RESNET_ROUGHER
        if max(self.resnet + self.plain) <= SMOOTH:
            return Finding.BOTH_SMOOTH
        return Finding.INSIDE_MARGIN if np.all(d > 0) or np.all(d < 0) else Finding.DISAGREE

    def table(self) -> dict[str, list]:
        """One row per slice, as the page shows it."""
        return {"direction seeds": [f"{s}, {s + 1}" for s in self.seeds], "ResNet": list(self.resnet),
                "plain twin": list(self.plain), "plain − ResNet": list(self.differences)}


@prepared.kept_on_disk(lambda p, span, seed, on_progress=None: ("landscape-study", p.key, span, seed))
def study_directions(p: pair.LoadedPair, span: float, seed: int, on_progress=None) -> DirectionStudy:
    """Non-convexity of both nets on the ``DIRECTIONS`` coarse slices of ``direction_seeds(seed)``."""
    x, y = _batch(p, BATCH)
    seeds, res, plain = direction_seeds(seed), [], []
    for k, s in enumerate(seeds):
        tell = (lambda f, k=k: on_progress((k + f) / len(seeds))) if on_progress else None
        g = pair_grids(p.resnet, p.plain, x, y, COARSE, span, 2, s, tell)
        res.append(g.resnet.nonconvexity())
        plain.append(g.plain.nonconvexity())
    return DirectionStudy(seeds, tuple(res), tuple(plain), COARSE, len(x))


PAPER = "Li et al. (Section 6, Fig. 5) find both landscapes smooth at 20 layers, the plain twin's chaotic at 56 and 110"


def verdict(study: DirectionStudy | None, depth: int, guessing: tuple[str, ...] = ()) -> tuple[Tone, str]:
    """The page's box: no verdict for a pair that guesses (``study`` may then be None) or when the slices disagree
    or differ by less than ``MARGIN``; else which net is less convex on every slice, against the paper."""
    if guessing:
        who = " and the ".join(guessing)
        return Tone.INFO, (f"**No verdict:** the {who} of this pair {'is' if len(guessing) == 1 else 'are'} no better "
                           "than guessing on fresh images, so there is no trained minimum to look around. Li et al. "
                           "compare the landscapes around minima that training found (Section 6); around weights "
                           "that learned nothing the loss says nothing about that. Pick more training steps above.")
    n, finding, d = len(study.seeds), study.finding(), study.differences
    numbers = (f"Non-convexity on {n} random slices: ResNet {min(study.resnet):.2f} to {max(study.resnet):.2f}, "
               f"plain twin {min(study.plain):.2f} to {max(study.plain):.2f}; plain twin minus ResNet "
               f"{d.min():+.2f} to {d.max():+.2f}.")
    paper = "plain" if depth >= DEEP else "alike" if depth <= SHALLOW else None  # what Li et al. find at this depth
    if finding is Finding.PLAIN_ROUGHER:
        said = (f"the plain twin's slice is less convex than the ResNet's on all {n} random slices, each by more "
                f"than {MARGIN:g}. {numbers}")
        if paper == "plain":
            return Tone.SUCCESS, f"**As in Li et al. (Section 6, Fig. 5):** {said}"
        if paper == "alike":
            return Tone.WARNING, f"**Not what Li et al. found at this depth ({depth} layers):** {said} {PAPER}."
        return Tone.INFO, f"**The plain twin's landscape is the less convex here ({depth} layers):** {said} {PAPER}."
    if finding is Finding.RESNET_ROUGHER:
        return Tone.WARNING, (f"**Not what Li et al. show:** the ResNet's slice is less convex than the plain twin's "
                              f"on all {n} random slices, each by more than {MARGIN:g}. {numbers} {PAPER}.")
    if finding is Finding.BOTH_SMOOTH:
        said = f"both nets' slices are nearly convex (non-convexity at most {SMOOTH:g}) on all {n} random slices."
        if paper == "alike":
            return Tone.SUCCESS, f"**As in Li et al. at 20 layers (Section 6, Fig. 5):** {said} {numbers}"
        if paper == "plain":
            return Tone.WARNING, (f"**Not what Li et al. found for nets this deep ({depth} layers):** {said} {numbers} "
                                  f"{PAPER}.")
        return Tone.INFO, f"**Both nearly convex here ({depth} layers):** {said} {numbers} {PAPER}."
    if finding is Finding.DISAGREE:
        more = int(np.sum(d > 0))
        return Tone.INFO, (f"**No clear difference:** the random slices disagree: the plain twin's is less convex on "
                           f"{more} of {n}, the ResNet's on {n - more}. {numbers} One slice is one draw; a verdict "
                           f"needs all {n} to agree, each by more than {MARGIN:g}.")
    inside = int(np.sum(np.abs(d) <= MARGIN))
    which = "plain twin's" if d[0] > 0 else "ResNet's"
    return Tone.INFO, (f"**No clear difference:** the {which} slice is less convex on all {n} random slices, but on "
                       f"{inside} of them by no more than the margin of {MARGIN:g}. {numbers}")


# --- the finer grid: a shared run while someone watches, then the disk cache ------------------------------
EVALUATION_COST = 1.0  # one evaluation on FINE_BATCH images ~ one race step of one model (the runs' cost unit)


def fine_key(p: pair.LoadedPair, span: float, seed: int) -> str:
    return f"landscape-{p.key}-span{span}-seed{seed}-{FINE}x{FINE}-n{FINE_BATCH}"


@dataclass(frozen=True)
class FinerGrid:
    """The finer grid when it is ready, else the shared run that computes it."""
    grids: PairGrids | None
    watch: runs.Watch | None = None  # hold it and look at it (snapshot) to keep the run going


def stored_fine_grid(p: pair.LoadedPair, span: float, seed: int) -> PairGrids | None:
    """The finer grid if anyone computed it before (the disk cache), else None; starts nothing."""
    stored = disk_cache.load(fine_key(p, span, seed))
    return None if stored is None else PairGrids.from_dict(stored)


def finer_grid(p: pair.LoadedPair, span: float, seed: int) -> FinerGrid:
    """The finer grid if anyone computed it before, else its shared run (started, joined, or just finished).

    The run goes on while someone watches it (``Watch.snapshot`` within the lease), stops when nobody does, queues
    behind other runs, and stores its result in the disk cache for every later visit.
    """
    key = fine_key(p, span, seed)
    stored = stored_fine_grid(p, span, seed)
    if stored is not None:
        return FinerGrid(stored)

    def records():
        x, y = _batch(p, FINE_BATCH)
        grids = yield from pair_grid_records(p.resnet, p.plain, x, y, FINE, span, 2, seed)
        disk_cache.save(key, grids.as_dict())
        return grids

    watch = runs.attach(("landscape", key), records, cost=2 * FINE**2 * EVALUATION_COST)
    snap = watch.snapshot()
    return FinerGrid(snap.result, None) if snap.status.state is runs.State.FINISHED else FinerGrid(None, watch)


def prepare_fine_grid(p: pair.LoadedPair, span: float, seed: int) -> bool:
    """Compute and store the finer grid unless it is stored (the prepare command); whether it was computed now."""
    if disk_cache.exists(fine_key(p, span, seed)):
        return False
    x, y = _batch(p, FINE_BATCH)
    disk_cache.save(fine_key(p, span, seed), pair_grids(p.resnet, p.plain, x, y, FINE, span, 2, seed).as_dict())
    return True


CLAIM = ("at 20 layers the page claims no difference between the two nets' landscapes (Li et al., Fig. 5: both "
         "smooth): across the random slices, no net is less convex on every one by more than the margin")
CLAIM_DEEP = ("at 56 layers and more the plain twin's landscape is the less convex (Li et al., Fig. 5): on every "
              "random slice by more than the margin")


def short_of_a_verdict(study: DirectionStudy) -> float:
    """How far the more consistent net's weakest slice stays below ``MARGIN`` (> 0: no verdict of a difference)."""
    d = study.differences
    return MARGIN - max(float(d.min()), float(-d.max()))


def claims(seeds: tuple[int, ...], full: bool) -> list[Claim]:
    """The page's claim on each shipped pair (CI) or on the pairs scripts/train_pairs.py trains from each seed
    (``full``): at 20 layers no verdict of a difference (Li et al. find both smooth); from 56 layers the plain twin
    less convex on every slice. A pair at chance fails the claim (the page gives it no verdict).

    Measured: the shipped ResNet-20 pair (seed 0, span 1, direction seed 0): non-convexity ResNet 0.01-0.10, plain
    twin 0.11-0.27, plain less convex on all 5 slices but on one by 0.02 only: no verdict, margin +0.03. The
    page's earlier default built-in pair (600 steps, seed 0): both nearly convex (ResNet 0.03-0.16, plain
    0.06-0.14), margin +0.15. The built-in ResNet-56 pair (600 steps, seed 0): its plain twin guesses (12%): no
    verdict, though its slices are far less convex (0.62-0.68 against 0.16-0.30). The narrow ResNet-20 CI pair held
    on seeds 0, 2, 3, 4 (margins +0.15, +0.20, +0.02, +0.12) and failed on seed 1 (-0.02: the plain twin less convex
    on all 5 slices, 0.13-0.37 against 0.01-0.17), a finding, not a seed to drop: that pair is not checked here.
    Cost: about 4 s of CPU per pair.
    """
    out = []
    for label, seed, p in builtin_pair.deep_claims_pairs(seeds, full, ci_size=False):
        study = study_directions(p, 1.0, seed)
        deep = p.cfg.depth >= DEEP
        margin = float(study.differences.min()) - MARGIN if deep else short_of_a_verdict(study)
        out.append(Claim("landscape", CLAIM_DEEP if deep else CLAIM, seed, -1.0 if p.is_at_chance else margin,
                         "non-convexity", f"{study.finding().value}; non-convexity ResNet {min(study.resnet):.2f}-"
                         f"{max(study.resnet):.2f}, plain {min(study.plain):.2f}-{max(study.plain):.2f}; accuracy "
                         f"ResNet {p.resnet_accuracy:.0%}, plain {p.plain_accuracy:.0%}", label))
    return out
