"""Shattered gradients (Balduzzi et al. 2017, "The Shattered Gradients Problem: If resnets are the
answer, then what is the question?", ICML).

The paper's setup, reproduced small: fully connected ReLU networks of width 200 on a 1-D input,
evaluated at initialisation on a sweep of points in [-2, 2]. For each point we take the gradient of the
(scalar) output with respect to the input. In a deep plain net that gradient looks like white noise
along the sweep (its autocorrelation drops to zero after lag 0); in a ResNet it stays smooth.

Batch norm, where on, is set from the sweep itself (one pass in training mode, then frozen), so the
gradient at each point depends only on that point.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

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


def shattered_sweep(cfg: SweepConfig, max_lag: int = 50) -> dict:
    """Gradients along the sweep for one net at initialisation, with their autocorrelation."""
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
    return {"x": x[:, 0].numpy(), "grad": grad, "autocorr": autocorrelation(grad, max_lag),
            "lag1": float(autocorrelation(grad, 1)[1])}
