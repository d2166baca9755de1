"""Loss landscapes (Li, Xu, Taylor, Studer, Goldstein 2018, "Visualizing the Loss Landscape of Neural
Nets", NeurIPS; Section 6 and Fig. 5 compare ResNets with their plain twins).

Around trained weights w we evaluate the loss at w + a*d1 (1-D) or w + a*d1 + b*d2 (2-D) for random
directions d1, d2. Raw random directions are meaningless across layers of different scale, so the
paper *filter-normalises* them: each filter d[i] (one output channel of a conv, one row of a linear
layer) is rescaled to the norm of the matching filter w[i]. Biases and batch-norm parameters get a zero
direction (the paper's ``ignore='biasbn'``). The model is evaluated in eval mode (batch norm uses its
running statistics) through ``torch.func.functional_call``, so the caller's model is never changed.

How rough a 2-D slice is, in one number (``Grid.roughness``): the root-mean-square distance of log10 loss
from the best-fitting quadratic bowl. A smooth, nearly convex basin is close to a bowl; a chaotic one is not.

The finer grid is slow: it is a shared run (``resviz.runs``) that goes on while someone watches it and stops when
nobody does; once done it stays in the disk cache for every later visit.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Generator

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from resviz import builtin_pair, disk_cache, pair, runs
from resviz.claims import Claim

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

    def roughness(self) -> float:
        """RMS distance of log10 loss from the best-fitting quadratic bowl over the 2-D grid (0 = a perfect bowl)."""
        a, b = np.meshgrid(self.alphas, self.betas)
        terms = np.stack([np.ones_like(a), a, b, a * a, b * b, a * b], axis=-1).reshape(-1, 6)
        z = np.log10(np.maximum(self.loss, 1e-8)).ravel()
        coef, *_ = np.linalg.lstsq(terms, z, rcond=None)
        return float(np.sqrt(np.mean((terms @ coef - z) ** 2)))


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


def line(p: pair.LoadedPair, span: float, seed: int, on_progress=None) -> PairGrids:
    """The live 1-D slice: ``2 * COARSE - 1`` points on ``BATCH`` images."""
    return pair_grids(p.resnet, p.plain, *_batch(p, BATCH), 2 * COARSE - 1, span, 1, seed, on_progress)


def coarse_grids(p: pair.LoadedPair, span: float, seed: int, on_progress=None) -> PairGrids:
    """The live 2-D slice: ``COARSE`` x ``COARSE`` on ``BATCH`` images."""
    return pair_grids(p.resnet, p.plain, *_batch(p, BATCH), COARSE, span, 2, seed, on_progress)


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


DEEP = 44  # from this depth on, Li et al. (Fig. 5) see the plain twin's landscape turn chaotic; at 20 both are smooth


def rougher_twin_expected(cfg) -> bool:
    """Whether Li et al.'s finding (the plain twin's neighbourhood is rougher) is made for nets this deep."""
    return cfg.depth >= DEEP


CLAIM = ("the plain twin's neighbourhood is rougher by the measure the page uses (RMS distance of log10 loss "
         "from the best-fitting bowl, 2-D slice), for a deep pair (ResNet-56 and its twin)")


def claims(seeds: tuple[int, ...], full: bool) -> list[Claim]:
    """Li et al.'s claim on the built-in ResNet-56 pair of each seed; only at full size.

    Li et al. make it for deep nets: at 20 layers they find both landscapes smooth (Fig. 5), and on the CI's
    20-layer pair it fails here on seeds 0 and 4 (roughness 0.177 vs 0.089 and 0.188 vs 0.130), so the page
    claims it only from DEEP layers on, and a deep pair takes minutes per seed to train.
    """
    if not full:
        return []
    out = []
    for seed in seeds:
        p = pair.load_pair(builtin_pair.train(builtin_pair.recipe("resnet56", builtin_pair.BuiltinRecipe.steps, seed),
                                              store=False), pair.PairSource.BUILTIN)
        g = coarse_grids(p, 1.0, seed)
        res, plain = g.resnet.roughness(), g.plain.roughness()
        out.append(Claim("landscape", CLAIM, seed, plain - res, "log10 loss",
                         f"roughness ResNet {res:.3f}, plain {plain:.3f}; accuracy ResNet {p.resnet_accuracy:.0%}, "
                         f"plain {p.plain_accuracy:.0%}; loss at the trained weights ResNet {g.resnet.centre_loss:.3f}, "
                         f"plain {g.plain.centre_loss:.3f}"))
    return out
