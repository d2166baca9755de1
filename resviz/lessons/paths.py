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

Where 2**n is small (ResNet-20: 9 blocks, 512 paths) every path is measured instead, exactly: one backward
pass per block and branch, batched (``exact_path_norms``): 511 block passes, about 10x two random paths per length.

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

from resviz import builtin_pair, pair, prepared
from resviz.claims import Claim
from resviz.hooks import Hooks
from resviz.lessons.training import Tone

EXACT_PATHS = 512  # up to 2**9 paths (ResNet-20) every path can be measured: about 5 s of one CPU thread, 8 images
CHUNK_IMAGES = 32  # images (paths x inputs) through one block at once: ResNet-20, 8 images: +120 MB peak (64: +195)


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


def _routed_block(block: nn.Module, h: torch.Tensor, cots: torch.Tensor) -> torch.Tensor:
    """Gradients at ``block``'s input for P cotangents at its output (P, B, ...): the first P through its residual
    branch, the next P through its shortcut -> (2P, B, ...). One forward and backward of 2P copies of the batch."""
    p, b = cots.shape[:2]
    m = (torch.arange(2 * p) < p).repeat_interleave(b).view(-1, *[1] * (h.dim() - 1)).to(h.dtype)

    def route(_module, args):  # the same forward values; per copy, the gradient through one operand only
        fx, x = args
        return m * fx + (1 - m) * fx.detach(), (1 - m) * x + m * x.detach()

    x = h.repeat(2 * p, *[1] * (h.dim() - 1)).requires_grad_(True)
    with Hooks() as hooks:
        hooks.forward_pre(block.add, route)
        out = block(x)
        (g,) = torch.autograd.grad(out, x, grad_outputs=torch.cat([cots, cots]).flatten(0, 1))
    return g.view(2 * p, b, *h.shape[1:])


def exact_path_norms(model: nn.Module, h0: torch.Tensor, y: torch.Tensor,
                     on_progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Mean over all C(n, k) paths of length k of the per-image L2 norm of their gradient at h0, for k = 0..n.

    Walks the tree of paths from the output back: each block splits every gradient in two (branch, shortcut), so
    the 2**n paths cost 2**n - 1 block passes instead of n * 2**n. ``model`` must be a private copy (hooks).
    """
    blocks = model.blocks()
    n, inputs = len(blocks), [h0.detach()]
    with torch.no_grad():
        for blk in blocks:
            inputs.append(blk(inputs[-1]))
    out = inputs[-1].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(_head(model, out), y, reduction="sum"), out)
    sums, done = np.zeros(n + 1), [0]

    def descend(i: int, cots: torch.Tensor, lengths: np.ndarray) -> None:
        if i < 0:  # at h0: one gradient per path
            np.add.at(sums, lengths, cots.flatten(2).norm(dim=2).mean(dim=1).numpy())
            done[0] += len(lengths)
            if on_progress:
                on_progress(done[0] / 2**n)
        elif len(cots) > 1 and 2 * len(cots) * h0.shape[0] > CHUNK_IMAGES:
            half = len(cots) // 2
            descend(i, cots[:half], lengths[:half])
            descend(i, cots[half:], lengths[half:])
        else:
            descend(i - 1, _routed_block(blocks[i], inputs[i], cots), np.concatenate([lengths + 1, lengths]))

    descend(n - 1, g[None], np.zeros(1, dtype=int))
    return sums / np.array(path_counts(n), dtype=float)


@dataclass(frozen=True)
class PathGradients:
    """The gradient each path length carries, over k = 0..n (numpy arrays)."""
    k: np.ndarray  # path lengths 0..n
    per_path: np.ndarray  # mean over length-k paths (all of them, or the sampled ones) of the per-image L2 norm of
    #                       the gradient at the first block's input
    count: np.ndarray  # C(n, k) paths of length k
    total: np.ndarray  # per_path * count: the gradient all length-k paths carry together
    share: np.ndarray  # total / total.sum()
    n_blocks: int
    draws: np.ndarray | None = None  # sampled: (n + 1, samples), one random path per length in each column;
    #                                  None: every path was measured (exact for these images)

    @property
    def exact(self) -> bool:
        return self.draws is None

    @property
    def samples(self) -> int:
        return 0 if self.draws is None else self.draws.shape[1]

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

    def per_draw(self) -> list["PathGradients"]:
        """The same measurement from each column of draws alone (one random path per length); [] when exact."""
        return [] if self.draws is None else [from_per_path(d, self.n_blocks) for d in self.draws.T]

    def spread(self) -> tuple[tuple[float, float], tuple[int, int]] | None:
        """(lowest, highest) mean length and 90% length over the single draws; None when exact or one draw."""
        each = self.per_draw()
        if len(each) < 2:
            return None
        means, reach = [d.mean_length for d in each], [d.length_reaching(0.9) for d in each]
        return (min(means), max(means)), (min(reach), max(reach))


def can_be_exact(n_blocks: int) -> bool:
    """Whether every path of ``n_blocks`` blocks can be measured in a few seconds (2**n <= EXACT_PATHS)."""
    return 2**n_blocks <= EXACT_PATHS


def from_per_path(per_path: np.ndarray, n: int, draws: np.ndarray | None = None) -> PathGradients:
    """Counts, totals and shares from the gradient of one path of each length."""
    count = np.array(path_counts(n), dtype=float)
    total = per_path * count
    return PathGradients(np.arange(n + 1), per_path, count, total,
                         total / total.sum() if total.sum() > 0 else total, n, draws)


def _prepared_key(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, samples: int = 4, seed: int = 0,
                  on_progress=None, exact: bool = False) -> tuple:
    """What a prepared measurement depends on: the network and its weights, the images, how paths are chosen."""
    images = {"x": x} if y is None else {"x": x, "y": y}
    return ("paths", repr(getattr(model, "cfg", type(model))), pair.fingerprint(model.state_dict(), images),
            0 if exact else samples, seed, exact)


@prepared.kept_on_disk(_prepared_key)
def gradient_by_path_length(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                            samples: int = 4, seed: int = 0,
                            on_progress: Callable[[float], None] | None = None, exact: bool = False) -> PathGradients:
    """The paper's measurement on ``model`` (a ResNet) for inputs ``x`` (labels ``y``; default: its predictions):
    ``samples`` random paths per length, or with ``exact`` every path (at most EXACT_PATHS of them)."""
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
    if exact:
        if not can_be_exact(n):
            raise ValueError(f"{2**n:,} paths are too many to measure one by one (at most {EXACT_PATHS}).")
        return from_per_path(exact_path_norms(net, h0, y, on_progress), n)
    draws = np.zeros((n + 1, samples))
    for k in range(n + 1):
        for j in range(samples if 0 < k < n else 1):  # k = 0 and k = n have a single path: it fills its row
            chosen = set(torch.randperm(n, generator=gen)[:k].tolist())
            draws[k, j if 0 < k < n else slice(None)] = path_gradient(net, h0, y, chosen).flatten(1).norm(dim=1).mean()
        if on_progress:
            on_progress((k + 1) / (n + 1))
    return from_per_path(draws.mean(axis=1), n, draws)


def verdict(g: PathGradients, guessing: tuple[str, ...] = ()) -> tuple[Tone, str]:
    """The page's sentence on the mean path length against a typical path's (n/2), and how sure it is.

    ``guessing``: the trained pair's networks within noise of guessing (``TrainedPair.guessing``). The paper measured
    a trained ResNet; a ResNet that learned nothing gets the measurement, never "as in the paper"."""
    half, mean = g.n_blocks / 2, g.mean_length
    spread = g.spread()
    how = (f"all {2**g.n_blocks:,} paths measured, exact for these images" if g.exact else
           f"estimated from {g.samples} random path{'s' if g.samples > 1 else ''} per length")
    said = f"Here the gradient comes on average from paths **{mean:.1f} blocks** long ({how}"
    if spread:
        (lo, hi), (r0, r1) = spread
        said += (f"; each random path per length alone gives {lo:.1f} to {hi:.1f} blocks, and 90% of the gradient "
                 f"within {r0}" + (f" to {r1}" if r1 != r0 else "") + " blocks")
        if lo < half <= hi:
            return Tone.WARNING, (f"{said}): the single draws fall on both sides of a typical path ({half:g} blocks), "
                                  "so this estimate cannot say whether the gradient comes from shorter paths. More "
                                  "random paths per length narrow it.")
    said += ")"
    if g.samples == 1:
        said += "; one random path per length gives no spread: more per length would show how sure this is"
    if mean < half and "ResNet" in guessing:
        return Tone.INFO, (f"{said}: shorter than a typical path ({half:g} blocks), but this ResNet is no better "
                           "than guessing, so it is not the trained net the paper measured: no verdict.")
    if mean < half:
        return Tone.SUCCESS, (f"{said}: shorter than a typical path ({half:g} blocks) in a network of {g.n_blocks} "
                              "blocks, as in the paper.")
    return Tone.INFO, (f"{said}: no shorter than a typical path ({half:g} blocks) in a network of {g.n_blocks} "
                       "blocks, not the paper's picture for this model.")


CLAIM = ("most gradient comes from paths much shorter than the network: the gradient-weighted mean path length "
         "is below n/2 blocks, the length of a typical path")


def claims(seeds: tuple[int, ...], full: bool) -> list[Claim]:
    """The lesson's claim on the built-in trained ResNet of each seed (CI: a narrow ResNet-20, 16-pixel images)."""
    out = []
    for seed in seeds:
        p = builtin_pair.claims_pair(seed, full)
        x, y = pair.eval_data(p.cfg, 32)
        g = gradient_by_path_length(p.resnet, x, y, samples=4 if full else 2, seed=seed,
                                    exact=can_be_exact(len(p.resnet.blocks())))
        out.append(Claim("paths", CLAIM, seed, g.n_blocks / 2 - g.mean_length, "blocks", (
            f"{g.n_blocks} blocks; mean length {g.mean_length:.2f}; 90% of the gradient from paths of at most "
            f"{g.length_reaching(0.9)} blocks")))
    return out
