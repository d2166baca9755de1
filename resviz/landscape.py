"""Loss landscapes (Li, Xu, Taylor, Studer, Goldstein 2018, "Visualizing the Loss Landscape of Neural
Nets", NeurIPS).

Around trained weights w we evaluate the loss at w + a*d1 (1-D) or w + a*d1 + b*d2 (2-D) for random
directions d1, d2. Raw random directions are meaningless across layers of different scale, so the
paper *filter-normalises* them: each filter d[i] (one output channel of a conv, one row of a linear
layer) is rescaled to the norm of the matching filter w[i]. Biases and batch-norm parameters get a zero
direction (the paper's ``ignore='biasbn'``). The model is evaluated in eval mode (batch norm uses its
running statistics) through ``torch.func.functional_call``, so the caller's model is never changed.

The finer grid is slow; ``start_background`` computes it in a daemon thread (one per key, a few at
once) and stores it in the disk cache for the next visit.
"""
from __future__ import annotations

import copy
import threading
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from resviz import diskcache

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


def loss_grid(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 11, span: float = 1.0,
              dims: int = 2, seed: int = 0, on_progress: Callable[[float], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> dict:
    """Loss (and accuracy) on a ``steps``-point (1-D) or ``steps`` x ``steps`` (2-D) grid over [-span, span].

    Directions come from ``seed`` (d1) and ``seed + 1`` (d2). Stops early, returning None, when
    ``should_stop()`` is true.
    """
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
        done, total = 0, loss.size
        for j, b in enumerate(betas):
            for i, a in enumerate(alphas):
                if should_stop and should_stop():
                    return None
                params = {n: w + a * d1[n] + (b * d2[n] if d2 is not None else 0) for n, w in base.items()}
                loss[j, i], acc[j, i] = _evaluate(model, params, x, y)
                done += 1
                if on_progress:
                    on_progress(done / total)
    finally:
        model.train(was_training)
    return {"alphas": alphas, "betas": betas, "loss": loss if dims == 2 else loss[0],
            "acc": acc if dims == 2 else acc[0], "dims": dims}


def pair_grids(resnet: nn.Module, plain: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, span: float,
               dims: int = 2, seed: int = 0, on_progress: Callable[[float], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> dict | None:
    """Loss grids of a ResNet and its plain twin on the same batch and grid (flat dict, disk-cache ready)."""
    out = {}
    for i, (name, model) in enumerate((("res", resnet), ("plain", plain))):
        prog = (lambda f, i=i: on_progress((i + f) / 2)) if on_progress else None
        g = loss_grid(copy.deepcopy(model), x, y, steps, span, dims, seed, prog, should_stop)
        if g is None:
            return None
        out.update(alphas=g["alphas"], betas=g["betas"], dims=dims, **{f"{name}_loss": g["loss"], f"{name}_acc": g["acc"]})
    return out


def split_pair(grids: dict) -> tuple[dict, dict]:
    """(ResNet grid, plain grid) from ``pair_grids``' flat dict."""
    common = {"alphas": grids["alphas"], "betas": grids["betas"], "dims": grids["dims"]}
    return ({**common, "loss": grids["res_loss"], "acc": grids["res_acc"]},
            {**common, "loss": grids["plain_loss"], "acc": grids["plain_acc"]})


# --- background finer grid -------------------------------------------------------------------------
MAX_BACKGROUND = 2  # at most this many grids computing at once on the teacher's server
_jobs: dict[str, threading.Thread] = {}
_lock = threading.Lock()


def background_status(key: str) -> str:
    """'done' (in the disk cache), 'running', or 'absent'."""
    if diskcache.exists(key):
        return "done"
    with _lock:
        t = _jobs.get(key)
        return "running" if t is not None and t.is_alive() else "absent"


def start_background(key: str, compute: Callable[[], dict]) -> str:
    """Run ``compute()`` in a daemon thread and store its result under ``key`` in the disk cache.

    One thread per key; refuses (returns 'busy') when MAX_BACKGROUND are already running.
    Returns the status after the call: 'done', 'running', or 'busy'.
    """
    with _lock:
        for k in [k for k, t in _jobs.items() if not t.is_alive()]:
            del _jobs[k]
        if diskcache.exists(key):
            return "done"
        if key in _jobs:
            return "running"
        if len(_jobs) >= MAX_BACKGROUND:
            return "busy"

        def work():
            try:
                result = compute()
                if result is not None:
                    diskcache.save(key, result)
            except Exception:  # noqa: BLE001 - a failed background grid must not take the server down
                import logging
                logging.getLogger("resviz").exception("background loss grid %s failed", key)

        t = threading.Thread(target=work, name=f"resviz-landscape-{key}", daemon=True)
        _jobs[key] = t
        t.start()
        return "running"
