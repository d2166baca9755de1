"""One place that registers PyTorch hooks and always removes them (pytorch-grad-cam's ActivationsAndGradients idea)."""
from __future__ import annotations

from typing import Callable

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
