"""One place that registers PyTorch hooks and always removes them (pytorch-grad-cam's ActivationsAndGradients idea),
and the one watch built on it: where a forward pass first makes NaN or inf."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class Hooks:
    """Register forward, forward-pre and tensor hooks; ``release()`` (or leaving the ``with``) removes every one.

        with Hooks() as hooks:
            hooks.forward(block.add, lambda m, inputs, out: seen.append(out.shape))
            model(x)
    """

    def __init__(self) -> None:
        self._handles: list = []

    def forward(self, module: nn.Module, fn: Callable) -> None:
        """Call ``fn(module, inputs, output)`` after ``module`` runs."""
        self._handles.append(module.register_forward_hook(fn))

    def forward_pre(self, module: nn.Module, fn: Callable) -> None:
        """Call ``fn(module, inputs)`` before ``module`` runs (it may return replacement inputs)."""
        self._handles.append(module.register_forward_pre_hook(fn))

    def tensor(self, t, fn: Callable) -> None:
        """Call ``fn(grad)`` when the gradient of tensor ``t`` is computed."""
        self._handles.append(t.register_hook(fn))

    def release(self) -> None:
        """Remove every hook registered so far."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> "Hooks":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class NonFiniteWatch:
    """Watch every leaf module of ``model`` while it runs: ``first`` names the first one (in the order they ran) whose
    output held NaN or inf, and ``module``/``inputs`` are that module and what it was given; None while all is finite.

        with NonFiniteWatch(model) as watch:
            model(x)
        watch.first  # "layer2.0.bn1"
    """

    def __init__(self, model: nn.Module) -> None:
        self.first: str | None = None
        self.module: nn.Module | None = None
        self.inputs: tuple = ()
        self._hooks = Hooks()
        for name, module in model.named_modules():
            if name and next(module.children(), None) is None:  # leaves: every op that computes runs in one
                self._hooks.forward(module, self._check(name))

    def _check(self, name: str) -> Callable:
        def hook(module, inputs, output):
            if self.first is None and isinstance(output, torch.Tensor) and not bool(torch.isfinite(output).all()):
                self.first, self.module, self.inputs = name, module, tuple(inputs)
        return hook

    def __enter__(self) -> "NonFiniteWatch":
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.release()
