"""Shattered gradients (Balduzzi et al. 2017, "The Shattered Gradients Problem: If resnets are the
answer, then what is the question?", ICML).

The paper's setup, reproduced small: fully connected ReLU networks of width 200 on a 1-D input,
evaluated at initialisation on a sweep of points in [-2, 2]. For each point we take the gradient of the
(scalar) output with respect to the input. The paper shows that the correlation between the gradients at
nearby inputs decays exponentially with depth in a feedforward net, until the gradient looks like white
noise, and only sublinearly in a ResNet (abstract): the ResNet's gradients decorrelate too, but slowly.
We measure it as the correlation of neighbouring points' gradients along the sweep (lag 1).

Batch norm, where on, is set from the sweep itself (one pass in training mode, then frozen), so the
gradient at each point depends only on that point.

One initialisation's depth curve jumps (seed 0's ResNet: 0.32 at 76 layers, 0.73 at 100), so the page averages
the curve over several initialisations, draws their band, and states only what the average and the band show.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
from torch import nn

from resviz import prepared
from resviz.claims import Claim
from resviz.lessons.training import Tone
from resviz.models import seeded


@dataclass(frozen=True)
class SweepConfig:
    depth: int = 24  # weighted hidden layers (the paper compares 1, 24 and 50)
    width: int = 200  # the paper's width
    residual: bool = False  # False: feedforward net; True: ResNet with 2-layer blocks
    norm: bool = True  # batch norm before each ReLU, as in the paper's figures
    n_points: int = 256  # inputs in the sweep
    x_range: float = 2.0  # sweep from -x_range to +x_range
    seed: int = 0  # initialisation


def _layer(width: int, norm: bool) -> list[nn.Module]:
    return [nn.Linear(width, width), *([nn.BatchNorm1d(width)] if norm else []), nn.ReLU()]


class MLPBlock(nn.Module):
    """y = x + F(x), F = two (linear, BN, ReLU) layers: the fully connected residual block."""

    def __init__(self, width: int, norm: bool):
        super().__init__()
        self.f = nn.Sequential(*_layer(width, norm), *_layer(width, norm))

    def forward(self, x):
        return x + self.f(x)


def build_sweep_net(cfg: SweepConfig) -> nn.Sequential:
    """Input 1 -> width, ``depth`` hidden layers (plain, or in residual pairs), width -> 1 output."""
    if cfg.depth < 1 or cfg.width < 1:
        raise ValueError("Depth and width must be at least 1.")
    with seeded(cfg.seed):  # a fixed net per seed, global RNG untouched, safe beside other sessions
        layers: list[nn.Module] = [nn.Linear(1, cfg.width), nn.ReLU()]
        if cfg.residual:
            layers += [MLPBlock(cfg.width, cfg.norm) for _ in range(max(1, cfg.depth // 2))]
        else:
            for _ in range(cfg.depth):
                layers += _layer(cfg.width, cfg.norm)
        layers.append(nn.Linear(cfg.width, 1))
        net = nn.Sequential(*layers)
        for m in net.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # He init, as in the paper
                nn.init.zeros_(m.bias)
    return net


def autocorrelation(g: np.ndarray, max_lag: int | None = None) -> np.ndarray:
    """Normalised autocorrelation of a 1-D series at lags 0..max_lag (1 at lag 0)."""
    g = np.asarray(g, dtype=float) - np.mean(g)
    denom = float(np.dot(g, g))
    max_lag = len(g) - 1 if max_lag is None else min(max_lag, len(g) - 1)
    if denom == 0.0:
        return np.zeros(max_lag + 1)
    return np.array([np.dot(g[: len(g) - k], g[k:]) / denom for k in range(max_lag + 1)])


def input_gradients(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    """d output / d input at every point of a 1-D sweep ``x`` of shape (N, 1), net in eval mode."""
    x = x.detach().clone().requires_grad_(True)
    out = net(x)  # (N, 1); in eval mode each output depends on its own input only
    (grad,) = torch.autograd.grad(out.sum(), x)
    return grad[:, 0].numpy()


@dataclass(frozen=True)
class Sweep:
    """The input gradient along the sweep for one net, and how it correlates with itself."""
    x: np.ndarray  # the sweep's inputs
    grad: np.ndarray  # d output / d x at each input
    autocorr: np.ndarray  # its autocorrelation at lags 0..max_lag
    lag1: float  # correlation of neighbouring points' gradients: 1 smooth, 0 white noise


@prepared.kept_on_disk(lambda cfg, max_lag=50: ("shattered-sweep", cfg, max_lag))
def shattered_sweep(cfg: SweepConfig, max_lag: int = 50) -> Sweep:
    """Gradients along the sweep for one net at initialisation, with their autocorrelation."""
    return _sweep(cfg, max_lag)


def _sweep(cfg: SweepConfig, max_lag: int) -> Sweep:
    net = build_sweep_net(cfg)
    x = torch.linspace(-cfg.x_range, cfg.x_range, cfg.n_points).unsqueeze(1)
    if cfg.norm:
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.momentum = None  # running stats = exactly this batch's stats
        net.train()
        with torch.no_grad():
            net(x)
    net.eval()
    grad = input_gradients(net, x)
    return Sweep(x[:, 0].numpy(), grad, autocorrelation(grad, max_lag), float(autocorrelation(grad, 1)[1]))


DEPTHS = (2, 4, 8, 16, 24, 32, 50, 76, 100)  # the depth curve: the paper compares 1, 24 and 50 layers
DEEP = (24, 50, 100)  # the deep nets the claim averages over
AVERAGED = 5  # initialisations the page's depth curve averages (seed 0's ResNet alone rises from 0.32 to 0.73)


def curve_seeds(seed: int) -> tuple[int, ...]:
    """The initialisations the page averages for seed ``seed``: it and the next AVERAGED - 1."""
    return tuple(range(seed, seed + AVERAGED))


@dataclass(frozen=True)
class DepthCurve:
    """Lag-1 gradient correlation against depth, plain net and ResNet, averaged over initialisations."""
    depths: tuple[int, ...]
    plain: np.ndarray  # the mean over the initialisations, at each depth
    resnet: np.ndarray
    plain_draws: np.ndarray | None = None  # (initialisations, depths); None: a single draw (then = ``plain``)
    resnet_draws: np.ndarray | None = None
    seeds: tuple[int, ...] = (0,)
    n_points: int = 256  # points in each sweep: sets the correlation white noise shows

    def draws(self, resnet: bool) -> np.ndarray:
        """Each initialisation's lag-1 correlation, (initialisations, depths)."""
        found = self.resnet_draws if resnet else self.plain_draws
        return np.atleast_2d(self.resnet if resnet else self.plain) if found is None else found

    def band(self, resnet: bool) -> tuple[np.ndarray, np.ndarray]:
        """The lowest and the highest initialisation at each depth."""
        d = self.draws(resnet)
        return d.min(axis=0), d.max(axis=0)

    def mean_gap(self, depths=DEEP) -> float:
        """How much more correlated the ResNet's gradients are, averaged over ``depths``."""
        rows = [self.depths.index(d) for d in depths]
        return float(np.mean(self.resnet[rows] - self.plain[rows]))

    def separation(self, depths=DEEP) -> float:
        """The smallest gap between the lowest ResNet draw and the highest plain draw at ``depths`` (< 0: overlap)."""
        rows = [self.depths.index(d) for d in depths]
        return float(np.min(self.band(True)[0][rows] - self.band(False)[1][rows]))

    @property
    def noise_level(self) -> float:
        """2 / sqrt(points): white noise's lag-1 correlation stays below it about 19 times in 20 (Bartlett)."""
        return 2 / np.sqrt(self.n_points)


@prepared.kept_on_disk(lambda cfg, depths=DEPTHS, on_progress=None, seeds=None: (
    "shattered-depth", cfg, tuple(depths), (cfg.seed,) if seeds is None else tuple(seeds)))
def depth_curve(cfg: SweepConfig, depths=DEPTHS, on_progress: Callable[[float], None] | None = None,
                seeds: tuple[int, ...] | None = None) -> DepthCurve:
    """Lag-1 correlation of both nets at each depth (``cfg``'s width, points, batch norm), one row per seed of
    ``seeds`` (default: ``cfg.seed`` alone), and its mean."""
    seeds = (cfg.seed,) if seeds is None else tuple(seeds)
    lag1 = np.zeros((2, len(seeds), len(depths)))
    for j, seed in enumerate(seeds):
        for i, d in enumerate(depths):
            for r in (0, 1):
                lag1[r, j, i] = _sweep(replace(cfg, depth=d, residual=bool(r), seed=seed), 1).lag1
            if on_progress:
                on_progress((j * len(depths) + i + 1) / (len(seeds) * len(depths)))
    return DepthCurve(tuple(depths), lag1[0].mean(axis=0), lag1[1].mean(axis=0), lag1[0], lag1[1], seeds,
                      cfg.n_points)


def _course(values: np.ndarray, depths: tuple[int, ...]) -> str:
    verb = "falls" if values[-1] < values[0] else "rises"
    return f"{verb} from {values[0]:.2f} at {depths[0]} layers to {values[-1]:.2f} at {depths[-1]}"


def depth_verdict(curve: DepthCurve) -> tuple[Tone, str]:
    """What the averaged depth curve shows, and whether its band separates the nets at the deep depths."""
    deep = [d for d in DEEP if d in curve.depths] or [curve.depths[-1]]
    n, seeds, noise = len(curve.seeds), curve.seeds, curve.noise_level
    if n < 2:
        return Tone.WARNING, (f"One initialisation (seed {seeds[0]}): a single draw jumps from depth to depth, so "
                              "it shows no trend.")
    (r_lo, r_hi), (p_lo, p_hi) = curve.band(True), curve.band(False)
    quiet = [d for i, d in enumerate(curve.depths) if (np.abs(curve.plain[i:]) < noise).all()]
    plain = f"the plain net's lag-1 correlation {_course(curve.plain, curve.depths)}" + (
        f", inside white noise's range (below {noise:.3g} = 2/√{curve.n_points}) from {quiet[0]} layers on"
        if quiet else "")
    said = (f"Averaged over {n} initialisations (seeds {seeds[0]}–{seeds[-1]}; the bands run from the lowest to the "
            f"highest), {plain}; the ResNet's {_course(curve.resnet, curve.depths)} (its draws: {r_lo[-1]:.2f} to "
            f"{r_hi[-1]:.2f}).")
    layers = ", ".join(map(str, deep))
    if overlap := [d for d in deep if r_lo[curve.depths.index(d)] <= p_hi[curve.depths.index(d)]]:
        i = curve.depths.index(overlap[0])
        return Tone.WARNING, (f"{said} At {overlap[0]} layers the draws overlap (ResNet {r_lo[i]:.2f} to "
                              f"{r_hi[i]:.2f}, plain {p_lo[i]:.2f} to {p_hi[i]:.2f}): within these initialisations' "
                              "spread the curve cannot tell the two nets apart there.")
    if curve.mean_gap(deep) < MUCH:
        return Tone.INFO, (f"{said} At {layers} layers every ResNet draw is above every plain draw, but by only "
                           f"{curve.mean_gap(deep):.2f} on average: a smaller gap than the paper's picture.")
    return Tone.SUCCESS, (f"{said} At {layers} layers every ResNet draw is above every plain draw (by "
                          f"{curve.mean_gap(deep):.2f} on average): its gradients shatter far less, as Balduzzi et al. "
                          "(2017, abstract) show.")


CLAIM = ("the plain net's input-gradient autocorrelation falls much faster with depth than the ResNet's "
         "(lag-1 correlation, mean gap over 24, 50 and 100 layers above 0.25)")
BAND_CLAIM = ("over these initialisations, every ResNet draw is above every plain draw at 24, 50 and 100 layers "
              "(the page's green verdict)")
MUCH = 0.25  # a quarter of the correlation scale: a gap a student sees on the chart


def claims(seeds: tuple[int, ...], full: bool) -> list[Claim]:
    """The lesson's claim for each seed, with the page's nets (width 200, 256 points; CI: only the deep ones), and
    the page's verdict on the band of all of them."""
    out, curves = [], []
    for seed in seeds:
        curve = depth_curve(SweepConfig(seed=seed), DEPTHS if full else DEEP)
        curves.append(curve)
        rows = ", ".join(f"{d}: plain {p:.2f} ResNet {r:.2f}" for d, p, r in zip(curve.depths, curve.plain,
                                                                                 curve.resnet))
        out.append(Claim("shattered", CLAIM, seed, curve.mean_gap() - MUCH, "correlation", rows))
    plain, res = np.stack([c.plain for c in curves]), np.stack([c.resnet for c in curves])
    band = DepthCurve(curves[0].depths, plain.mean(axis=0), res.mean(axis=0), plain, res, tuple(seeds))
    out.append(Claim("shattered", BAND_CLAIM, seeds[0], band.separation(), "correlation",
                     f"seeds {seeds[0]}-{seeds[-1]}: {depth_verdict(band)[0].value}"))
    return out
