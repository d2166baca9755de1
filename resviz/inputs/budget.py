"""What one student's request may cost the shared server: memory and multiply-adds, estimated before building.

The estimate comes from the shape trace (meta device: no tensor is computed), so a model too big for the machine
is refused with numbers in well under a second, before a single weight is allocated. A teacher sets the budget
with environment variables (``RESVIZ_BUDGET_MB``, ``RESVIZ_BUDGET_GMACS``, ``RESVIZ_BUDGET_BLOCKS``); the defaults
are in ``resviz.inputs.limits``.

    from resviz.inputs import budget
    budget.check_model(cfg, batch=8, what="Signal flow", nets=2)   # raises BudgetError with the numbers
"""
from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass, replace

import torch

from resviz import models, trace
from resviz.inputs import limits

log = logging.getLogger("resviz")

BYTES_PER_VALUE = 4  # float32 weights and activations
TRAIN_COPIES = 3  # training holds each weight, its gradient and the optimizer's momentum
BACKWARD_MACS = 3  # forward + backward costs about three forwards (two matmuls per layer going back)
ENV = {"memory_mb": "RESVIZ_BUDGET_MB", "gmacs": "RESVIZ_BUDGET_GMACS", "blocks": "RESVIZ_BUDGET_BLOCKS"}


class BudgetError(models.ConfigError):
    """A request bigger than the server allows one student; the message gives the numbers and what to change."""


@dataclass(frozen=True)
class Budget:
    """The most one request may take; ``session_budget()`` reads the teacher's settings."""

    memory_mb: float = limits.BUDGET_MB  # weights, gradients and activations, all networks of the request
    gmacs: float = limits.BUDGET_GMACS  # multiply-adds of one step (forward, and backward when training), billions
    blocks: int = limits.BUDGET_BLOCKS  # residual blocks in one model: tracing and building grow with them


@dataclass(frozen=True)
class Estimate:
    """One image through one network, from the trace: what the budget multiplies by batch and networks."""

    params: int  # weights and biases
    activations: int  # values of every layer's output: what autograd keeps for the backward pass
    largest: int  # values of the largest single layer output: what a forward without gradients needs at once
    macs: int  # multiply-adds of one forward pass

    def memory(self, batch: int = 1, nets: int = 1, train: bool = True) -> int:
        """Bytes for ``nets`` networks on a batch: every network's weights (x3 when training) plus the activations
        of one (the networks of a request run one after another, so their activations are never held at once)."""
        weights = nets * self.params * (TRAIN_COPIES if train else 1)
        acts = batch * (self.activations if train else 2 * self.largest)
        return (weights + acts) * BYTES_PER_VALUE

    def step_macs(self, batch: int = 1, nets: int = 1, train: bool = True) -> int:
        """Multiply-adds of one step: ``nets`` networks, forward (and backward when training) over the batch."""
        return nets * batch * self.macs * (BACKWARD_MACS if train else 1)


def session_budget() -> Budget:
    """The budget for each student's request: the teacher's environment variables, else ``limits``' defaults."""
    values = {}
    for field, var in ENV.items():
        text = os.environ.get(var)
        if text:
            try:
                values[field] = type(getattr(Budget, field))(float(text))
            except ValueError:
                log.warning("%s=%r is not a number; using the default %s", var, text, getattr(Budget, field))
    return Budget(**values)


@functools.lru_cache(maxsize=128)
def estimate(cfg: models.ResNetConfig) -> Estimate:
    """Parameters, activations and MACs of ``cfg`` for one image, exactly, from a trace of at most two blocks a stage.

    Within a stage every block after the first has the same shapes, so the second block's rows count
    ``layers[i] - 1`` times: a 300-blocks-per-stage net costs the trace of a 2-blocks-per-stage one.
    """
    short = replace(cfg, layers=tuple(min(n, 2) for n in cfg.layers))
    t = trace.trace_shapes(short)
    repeats = {f"layer{i + 1}.1": n - 1 for i, n in enumerate(cfg.layers)}
    params = activations = largest = macs = 0
    for row in t.rows:
        k = repeats.get(row["block"], 1)
        size = math.prod(row["out_shape"])
        params, macs = params + k * row["params"], macs + k * row["macs"]
        activations, largest = activations + k * size, max(largest, size)
    return Estimate(params=params, activations=activations, largest=largest, macs=macs)


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MB"


def check_model(cfg: models.ResNetConfig, batch: int = 1, what: str = "This model", nets: int = 1,
                train: bool = True, limit: Budget | None = None) -> Estimate:
    """Raise BudgetError, with the numbers, if ``nets`` copies of ``cfg`` on ``batch`` images exceed the budget
    (ConfigError, first, if ``cfg`` cannot be built at all).

    ``what`` names the request in the message ("Signal flow", "The training race"); ``train`` counts
    gradients, optimizer state and the backward pass. Returns the estimate when it fits.
    """
    limit = limit or session_budget()
    models.check_config(cfg)  # stages, channels, input, classes: bounded in microseconds, before any trace or hash
    blocks = sum(cfg.layers)
    if blocks > limit.blocks:
        raise BudgetError(f"{what}: the model has {blocks:,} blocks; this server allows {limit.blocks:,} "
                          "(ResNet-1202, the deepest in the paper, has 600). Use fewer blocks per stage.")
    est = estimate(cfg)
    memory, macs = est.memory(batch, nets, train), est.step_macs(batch, nets, train)
    if memory > limit.memory_mb * 2**20 or macs > limit.gmacs * 1e9:
        nets_words = f", {nets} networks" if nets > 1 else ""
        raise BudgetError(
            f"{what} needs about {_gb(memory)} of memory ({est.params / 1e6:,.1f}M parameters, "
            f"{_gb(est.activations * BYTES_PER_VALUE)} of layer outputs per image; batch of {batch}{nets_words}) "
            f"and {macs / 1e9:,.0f} G multiply-adds per step; this server allows {_gb(limit.memory_mb * 2**20)} and "
            f"{limit.gmacs:,.0f} G per student. Use a smaller width, input size or batch, or fewer blocks.")
    return est


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` says the machine ran out of memory: CUDA's OutOfMemoryError, Python's MemoryError, or the
    CPU allocator's RuntimeError ("[enforce fail at alloc_cpu.cpp…] DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text or "alloc_cpu.cpp" in text
                                            or "out of memory" in text.lower())
