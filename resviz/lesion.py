"""Lesion study (Veit, Wilber, Belongie 2016, "Residual Networks Behave Like Ensembles of Relatively
Shallow Networks", NeurIPS, section 4).

Delete one block at a time at test time and measure test accuracy.

* ResNet block: its residual branch F is removed, so the block outputs only its shortcut:
  ``relu_out(shortcut(x))``, i.e. the block as if F(x) = 0. For an identity block that is relu(x) = x
  (x is already the output of a ReLU). For a downsampling block the shortcut is what remains: the
  zero-padded subsample (option A) or the 1x1 projection + BN (options B/C), so the shapes still fit.
* Plain block whose input and output shapes match: it becomes the identity.
* Plain block that changes the shape (the first block of a stage): it cannot be deleted (nothing would
  fit the next layer); it is reported as impossible.

Each lesion is made on a deep copy: the caller's (possibly shared, cached) model is never touched.
"""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from torch import nn


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


def block_names(model: nn.Module) -> list[str]:
    """'layer1.0', 'layer1.1', ... in depth order."""
    return [f"{stage}.{j}" for stage, seq in zip(model.stage_names, model.stages()) for j in range(len(seq))]


def changes_shape(block: nn.Module) -> bool:
    """True for a block whose output shape differs from its input (stride or channel change)."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    main = [m for m in convs if not (block.downsample is not None and m in list(block.downsample.modules()))]
    return block.stride != 1 or main[0].in_channels != main[-1].out_channels


def lesion(model: nn.Module, index: int) -> nn.Module:
    """A copy of ``model`` with block ``index`` (depth order) deleted, as described in the module docstring."""
    blocks = model.blocks()
    if not 0 <= index < len(blocks):
        raise IndexError(f"Block {index} does not exist; the model has {len(blocks)} blocks.")
    name = block_names(model)[index]
    if model.cfg.residual:
        replacement = SkipOnly(blocks[index])
    elif changes_shape(blocks[index]):
        raise LesionImpossible(f"{name} changes the tensor shape; a plain net cannot skip it.")
    else:
        replacement = nn.Identity()
    out = copy.deepcopy(model)
    stage, j = name.split(".")
    getattr(out, stage)[int(j)] = copy.deepcopy(replacement)
    return out


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    """Top-1 accuracy in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            pred = model(x[i:i + batch].to(device)).argmax(1).cpu()
            correct += (pred == y[i:i + batch].cpu()).sum().item()
    return correct / len(x)


def lesion_study(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 on_progress: Callable[[float], None] | None = None) -> dict:
    """Accuracy with each block deleted in turn (NaN where impossible), plus the intact model's."""
    blocks = model.blocks()
    acc = np.full(len(blocks), np.nan)
    possible = np.zeros(len(blocks), dtype=bool)
    for i in range(len(blocks)):
        try:
            acc[i] = accuracy(lesion(model, i), x, y)
            possible[i] = True
        except LesionImpossible:
            pass
        if on_progress:
            on_progress((i + 1) / len(blocks))
    return {"names": block_names(model), "accuracy": acc, "possible": possible,
            "downsampling": np.array([changes_shape(b) for b in blocks]),
            "intact": accuracy(copy.deepcopy(model), x, y)}
