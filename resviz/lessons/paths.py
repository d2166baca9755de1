"""Paths through a residual network (Veit, Wilber, Belongie 2016, "Residual Networks Behave Like
Ensembles of Relatively Shallow Networks", NeurIPS).

Unrolling n residual blocks y = x + F(x) gives 2**n paths from input to output: each block is either
passed through its residual branch F or skipped through its shortcut. A path that goes through k
branches has length k, and there are C(n, k) of them, so path lengths are binomially distributed.

The paper's measurement of how much gradient each path length carries (Section 5.2, Fig. 6): run a
forward pass as usual; in the backward pass pick k blocks at random and let the gradient flow only
through their residual branches, and only through the shortcuts of the other n - k blocks. The
gradient that reaches the input then travelled along one path of length k. Averaging its norm over
random choices gives the typical magnitude of a length-k path; times C(n, k) it gives the total
gradient that all paths of length k carry.

In the paper's trained 110-layer ResNet (54 blocks), almost all the gradient came from paths only 5 to 17
blocks long (Section 5.2), although most paths are about 27 blocks long.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from resviz import builtin_pair, pair
from resviz.claims import Claim
from resviz.hooks import Hooks


def path_counts(n_blocks: int) -> list[int]:
    """Number of paths of each length k = 0..n through n residual blocks: C(n, k)."""
    if n_blocks < 0:
        raise ValueError("The number of blocks cannot be negative.")
    return [math.comb(n_blocks, k) for k in range(n_blocks + 1)]


def path_length_distribution(n_blocks: int) -> np.ndarray:
    """Share of all 2**n paths that have length k, for k = 0..n (Binomial(n, 1/2))."""
    counts = path_counts(n_blocks)
    return np.array(counts, dtype=float) / float(2**n_blocks)


def _route_gradient(through_branch: bool) -> Callable:
    """A pre-hook for a block's Add: same forward values, gradient only through one operand."""

    def hook(_module, args):
        fx, x = args
        return (fx, x.detach()) if through_branch else (fx.detach(), x)

    return hook


def _stem(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = model.conv1(x)
    x = model.bn1(x)
    x = model.relu(x)
    return model.maxpool(x)  # the input of the first residual block


def _head(model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    h = model.avgpool(h)
    return model.fc(torch.flatten(h, 1))


def path_gradient(model: nn.Module, h0: torch.Tensor, y: torch.Tensor, branch_blocks: set[int]) -> torch.Tensor:
    """d loss / d h0 (h0 = input of the first block) along one path; the forward pass is the usual one.

    Gradient flows through the residual branch of the blocks in ``branch_blocks`` and through the
    shortcut of every other block. ``model`` must be a private copy: hooks are added (and removed).
    Summed over all 2**n paths this is exactly the full gradient (the backward pass is linear).
    """
    blocks = model.blocks()
    with Hooks() as hooks:
        for i, b in enumerate(blocks):
            hooks.forward_pre(b.add, _route_gradient(i in branch_blocks))
        h = h0.detach().requires_grad_(True)
        out = h
        for b in blocks:
            out = b(out)
        loss = nn.functional.cross_entropy(_head(model, out), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, h)
    return grad


@dataclass(frozen=True)
class PathGradients:
    """The gradient each path length carries, over k = 0..n (numpy arrays)."""
    k: np.ndarray  # path lengths 0..n
    per_path: np.ndarray  # mean over sampled length-k paths of the per-image L2 norm of the gradient at the
    #                       first block's input
    count: np.ndarray  # C(n, k) paths of length k
    total: np.ndarray  # per_path * count: the gradient all length-k paths carry together
    share: np.ndarray  # total / total.sum()
    n_blocks: int

    @property
    def mean_length(self) -> float:
        """The path length the gradient comes from on average (lengths weighted by their share)."""
        return float((self.share * self.k).sum())

    def length_reaching(self, fraction: float) -> int:
        """The shortest length k such that paths up to length k carry ``fraction`` of the gradient."""
        return int(self.k[(self.share.cumsum() >= fraction - 1e-12).argmax()])

    @property
    def typical_lengths(self) -> np.ndarray:
        """The most common path lengths: n/2, or the two lengths beside it when n is odd."""
        return self.k[self.count == self.count.max()]


def gradient_by_path_length(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                            samples: int = 4, seed: int = 0,
                            on_progress: Callable[[float], None] | None = None) -> PathGradients:
    """The paper's measurement on ``model`` (a ResNet) for inputs ``x`` (labels ``y``; default: its predictions)."""
    if not getattr(model.cfg, "residual", False):
        raise ValueError("Paths need shortcuts: pick the ResNet, not its plain twin.")
    net = copy.deepcopy(model).eval()  # never hook the caller's (maybe shared) model
    for p in net.parameters():
        p.requires_grad_(False)  # only the input gradient is needed
    n = len(net.blocks())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        h0 = _stem(net, x)
        if y is None:
            y = net(x).argmax(dim=1)
    per_path = np.zeros(n + 1)
    for k in range(n + 1):
        norms = []
        for _ in range(samples if 0 < k < n else 1):  # k = 0 and k = n have a single path
            chosen = set(torch.randperm(n, generator=gen)[:k].tolist())
            norms.append(path_gradient(net, h0, y, chosen).flatten(1).norm(dim=1).mean().item())
        per_path[k] = float(np.mean(norms))
        if on_progress:
            on_progress((k + 1) / (n + 1))
    count = np.array(path_counts(n), dtype=float)
    total = per_path * count
    return PathGradients(np.arange(n + 1), per_path, count, total,
                         total / total.sum() if total.sum() > 0 else total, n)


CLAIM = ("most gradient comes from paths much shorter than the network: the gradient-weighted mean path length "
         "is below n/2 blocks, the length of a typical path")


def claims(seeds: tuple[int, ...], full: bool) -> list[Claim]:
    """The lesson's claim on the built-in trained ResNet of each seed (CI: a narrow ResNet-20, 16-pixel images)."""
    out = []
    for seed in seeds:
        p = builtin_pair.claims_pair(seed, full)
        x, y = pair.eval_data(p.cfg, 32)
        g = gradient_by_path_length(p.resnet, x, y, samples=4 if full else 2, seed=seed)
        out.append(Claim("paths", CLAIM, seed, g.n_blocks / 2 - g.mean_length, "blocks", (
            f"{g.n_blocks} blocks; mean length {g.mean_length:.2f}; 90% of the gradient from paths of at most "
            f"{g.length_reaching(0.9)} blocks")))
    return out
