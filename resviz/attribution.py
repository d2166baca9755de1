"""Thin captum wrappers -> numpy heat maps of the input image: Grad-CAM, Integrated Gradients, Occlusion.

Each runs on a private copy of the model (``features.working_copy``): captum's hooks and gradients never touch
the shared, read-only model. Integrated Gradients walks its path in chunks so a page can show progress.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam, Occlusion
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import nn

from resviz.features import working_copy


def grad_cam(model: nn.Module, x: torch.Tensor, block: int, target: int) -> np.ndarray:
    """captum's LayerGradCam at block ``block`` (output after the block's ReLU), upsampled to the image (H, W)."""
    net = working_copy(model)
    cam = LayerGradCam(net, net.blocks()[block]).attribute(x, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")[0, 0].detach().cpu().numpy()


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: int, steps: int = 32, chunk: int = 8,
                         baseline: torch.Tensor | None = None, method: str = "gausslegendre",
                         on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Integrated Gradients (Sundararajan et al. 2017) with captum's quadrature, ``chunk`` path points at a time.

    Returns ``{"attr": (C, H, W), "heat": (H, W) summed over channels, "delta": completeness error,
    "score", "baseline_score"}``; ``on_progress(done, total)`` is called after each chunk.
    """
    net = working_copy(model)
    baseline = torch.zeros_like(x) if baseline is None else baseline
    step_sizes_fn, alphas_fn = approximation_parameters(method)
    weights, alphas = step_sizes_fn(steps), alphas_fn(steps)
    total = torch.zeros_like(x)
    for start in range(0, steps, chunk):
        a = torch.tensor(alphas[start:start + chunk], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        w = torch.tensor(weights[start:start + chunk], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        path = (baseline + a * (x - baseline)).requires_grad_(True)  # (chunk, C, H, W) points on the line
        grads = torch.autograd.grad(net(path)[:, target].sum(), path)[0]
        total += (w * grads).sum(dim=0, keepdim=True)
        if on_progress:
            on_progress(min(start + chunk, steps), steps)
    attr = ((x - baseline) * total).detach()
    with torch.no_grad():
        score, base_score = (float(net(t)[0, target]) for t in (x, baseline))
    delta = float(attr.sum()) - (score - base_score)  # completeness: attributions sum to the score change
    return {"attr": attr[0].cpu().numpy(), "heat": attr[0].sum(0).cpu().numpy(), "delta": delta,
            "score": score, "baseline_score": base_score}


def occlusion(model: nn.Module, x: torch.Tensor, target: int, window: int | None = None,
              stride: int | None = None, per_eval: int = 8) -> np.ndarray:
    """captum's Occlusion: how much the target score drops when a grey square hides each region (H, W)."""
    size = x.shape[-1]
    window = window or max(1, size // 4)  # 7 x 7 positions by default: 49 forwards
    stride = stride or max(1, window // 2)
    net = working_copy(model)
    with torch.no_grad():
        attr = Occlusion(net).attribute(x, sliding_window_shapes=(x.shape[1], window, window),
                                        strides=(x.shape[1], stride, stride), target=target, baselines=0.0,
                                        perturbations_per_eval=per_eval)
    return attr[0].sum(0).cpu().numpy()
