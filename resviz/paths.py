"""Paths through a residual network (Veit, Wilber, Belongie 2016, "Residual Networks Behave Like
Ensembles of Relatively Shallow Networks", NeurIPS).

Unrolling n residual blocks y = x + F(x) gives 2**n paths from input to output: each block is either
passed through its residual branch F or skipped through its shortcut. A path that goes through k
branches has length k, and there are C(n, k) of them, so path lengths are binomially distributed.

The paper's measurement of how much gradient each path length carries (section 6, Fig. 6): run a
forward pass as usual; in the backward pass pick k blocks at random and let the gradient flow only
through their residual branches, and only through the shortcuts of the other n - k blocks. The
gradient that reaches the input then travelled along one path of length k. Averaging its norm over
random choices gives the typical magnitude of a length-k path; times C(n, k) it gives the total
gradient that all paths of length k carry.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch
from torch import nn


def path_counts(n_blocks: int) -> list[int]:
    """Number of paths of each length k = 0..n through n residual blocks: C(n, k)."""
    if n_blocks < 0:
        raise ValueError("The number of blocks cannot be negative.")
    return [math.comb(n_blocks, k) for k in range(n_blocks + 1)]


def path_length_distribution(n_blocks: int) -> np.ndarray:
    """Share of all 2**n paths that have length k, for k = 0..n (Binomial(n, 1/2))."""
    counts = path_counts(n_blocks)
    return np.array(counts, dtype=float) / float(2**n_blocks)


def _route_gradient(block_add: nn.Module, through_branch: bool):
    """A pre-hook on a block's Add: same forward values, gradient only through one operand."""

    def hook(_module, args):
        fx, x = args
        return (fx, x.detach()) if through_branch else (fx.detach(), x)

    return block_add.register_forward_pre_hook(hook)


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
    shortcut of every other block. ``model`` must be a private copy: hooks are added and removed.
    Summed over all 2**n paths this is exactly the full gradient (the backward pass is linear).
    """
    blocks = model.blocks()
    hooks = [_route_gradient(b.add, i in branch_blocks) for i, b in enumerate(blocks)]
    try:
        h = h0.detach().requires_grad_(True)
        out = h
        for b in blocks:
            out = b(out)
        loss = nn.functional.cross_entropy(_head(model, out), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, h)
    finally:
        for hk in hooks:
            hk.remove()
    return grad


def gradient_by_path_length(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                            samples: int = 4, seed: int = 0,
                            on_progress: Callable[[float], None] | None = None) -> dict:
    """The paper's measurement on ``model`` (a ResNet) for inputs ``x`` (labels ``y``; default: its predictions).

    Returns numpy arrays over k = 0..n: ``per_path`` (mean over sampled length-k paths of the per-image
    norm of the gradient at the first block's input),
    ``count`` (C(n, k)), ``total`` (per_path * count) and ``share`` (total / total.sum()).
    """
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
    return {"k": np.arange(n + 1), "per_path": per_path, "count": count, "total": total,
            "share": total / total.sum() if total.sum() > 0 else total, "n_blocks": n}
