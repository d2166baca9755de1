"""The race loop: several networks trained side by side on the same batches, as a generator of records.

    models = make_race_models(get_config("resnet56"), seed=0, include_shallow_plain=True)
    for rec in race(models, train, test, RaceConfig(steps=100)):
        print(rec["step"], {name: r["loss"] for name, r in rec["runs"].items()})

Every model sees the same batches (one ``torch.Generator`` per run, never the global RNG: many students
train at once) and gets its own SGD optimizer with the same settings. Per-step statistics stay cheap: one
fused norm over the layer gradients per model and one device-to-CPU copy per step for all models.
"""
from __future__ import annotations

import enum
import io
import math
import time
from dataclasses import dataclass, replace
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from resviz import models as M
from resviz.lessons.training.sources import _tensors


DIVERGED_LOSS = 1e4  # a cross-entropy this large means logits off by thousands: the run has blown up


class RacePair(enum.Enum):
    """Which networks race: the sidebar's model and its twin, or the paper's deeper ResNet-56 and plain-56."""
    SIDEBAR = "sidebar"
    DEEP = "resnet56"

    def config(self, sidebar_cfg: M.ResNetConfig) -> M.ResNetConfig:
        """The residual config this pair races."""
        return sidebar_cfg if self is RacePair.SIDEBAR else M.get_config(self.value)


@dataclass(frozen=True)
class RaceConfig:
    """Settings shared by every network in a race; the defaults are the ResNet-20 recipe (``RECIPES``)."""

    lr: float = 0.01  # the paper's warm-up rate at batch 128 (0.1x its 0.1): deep ResNets blow up at 0.1 here
    batch_size: int = 128  # the paper's batch; on a CPU, images per second hardly depend on the batch
    steps: int = 300  # about 30 s for ResNet-20 and its twin on a 2-core CPU
    momentum: float = 0.9  # the paper's SGD momentum
    weight_decay: float = 1e-4  # the paper's weight decay
    seed: int = 0  # fixes the initial weights (make_race_models) and the batch order
    eval_every: int = 25  # held-out accuracy every this many steps (and at the last); 0 = never
    eval_size: int = 1000  # held-out images per evaluation (the same ones each time): +-1.5 accuracy points
    device: str = "cpu"
    warmup_steps: int = 0  # the paper's warm-up (section 4.2, ResNet-110): lr x warmup_factor for these first steps
    warmup_factor: float = 0.1
    decay_at: tuple[float, ...] = ()  # fractions of the run after which the lr is divided by 10 (paper: 0.5, 0.75)
    bn_refresh: int = 512  # training images that re-estimate batch-norm statistics before each evaluation

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step`` (1-based): warm-up, then the base rate divided by 10 at each decay point."""
        if step <= self.warmup_steps:
            return self.lr * self.warmup_factor
        return self.lr * 0.1 ** sum(step > f * self.steps for f in self.decay_at)


def layer_params(model: nn.Module) -> tuple[list[str], list[nn.Parameter]]:
    """Names and weights of the layers whose gradient norms the race records: every conv and linear layer."""
    names, params = [], []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            names.append(name)
            params.append(mod.weight)
    return names, params


def short_name(cfg: M.ResNetConfig) -> str:
    """A chart label: 'ResNet-56' or 'plain-56'."""
    return f"{'ResNet' if cfg.residual else 'plain'}-{cfg.depth}"


def shallow_config(cfg: M.ResNetConfig) -> M.ResNetConfig | None:
    """A plain net with a third of the blocks per stage (plain-20 for ResNet-56), or None if none is shallower."""
    layers = tuple(max(1, n // 3) for n in cfg.layers)
    if layers == tuple(cfg.layers):
        return None
    plain = replace(cfg, residual=False, layers=layers)
    return replace(plain, name=f"resnet{plain.depth}")  # its label reads "plain twin of resnet20"


def make_race_models(cfg: M.ResNetConfig, seed: int = 0, include_shallow_plain: bool = False,
                     device: str | torch.device | None = None) -> dict[str, nn.Module]:
    """The ResNet of ``cfg``, its plain twin, and optionally a shallower plain net; in ``Role`` order.

    The twin is copied from the ResNet (``models.plain_twin``), never built separately: every tensor the two
    share starts equal, whatever the shortcut option.
    """
    res_cfg = M.with_shortcuts(cfg)
    resnet = M.build_model(res_cfg, seed=seed)
    twin = M.plain_twin(resnet)  # leaves the global RNG as it was
    race_models = {short_name(res_cfg): resnet, short_name(M.plain_config(res_cfg)): twin}
    shallow = shallow_config(res_cfg) if include_shallow_plain else None
    if shallow is not None:
        race_models[short_name(shallow)] = M.build_model(shallow, seed=seed)
    return {k: m.to(device) if device is not None else m for k, m in race_models.items()}


def batch_indices(n: int, batch_size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """Indices of each step's batch: seeded shuffled epochs, drawn from a private generator."""
    g = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(n, generator=g), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        yield perm[pos:pos + batch_size]
        pos += batch_size


@torch.no_grad()
def refresh_batch_norm(model: nn.Module, x: torch.Tensor, batch: int = 256) -> None:
    """Re-estimate every batch-norm layer's running statistics on ``x`` with the current weights (an equal-weight
    average over the batches), so that an evaluation reflects these weights, not the last ~10 steps' drift."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or len(x) == 0:
        return
    was_training, momenta = model.training, [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    device = next(model.parameters()).device
    for i in range(0, len(x), batch):
        model(x[i:i + batch].to(device))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 250) -> float:
    """Accuracy of ``model`` on (x, y), in eval mode (batch-norm running statistics); restores train mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch):
        logits = model(x[i:i + batch].to(device))
        correct += (logits.argmax(1).cpu() == y[i:i + batch]).sum().item()
    model.train(was_training)
    return correct / max(1, len(x))


def check_race(train_x: torch.Tensor, train_y: torch.Tensor, race_models: dict[str, nn.Module],
               cfg: RaceConfig) -> None:
    """ConfigError, in plain words, for settings or data the race cannot use."""
    if cfg.steps < 1 or cfg.batch_size < 1 or not cfg.lr > 0:
        raise M.ConfigError("Steps, batch size and learning rate must all be positive.")
    if len(train_x) < 1:
        raise M.ConfigError("The training set is empty.")
    if cfg.batch_size > len(train_x):
        raise M.ConfigError(f"The batch size ({cfg.batch_size}) is larger than the training set ({len(train_x)}).")
    n_classes = int(train_y.max()) + 1
    for name, m in race_models.items():
        out = getattr(m, "fc", None)
        if isinstance(out, nn.Linear) and out.out_features < n_classes:
            raise M.ConfigError(f"{name} has {out.out_features} outputs but the data has {n_classes} classes.")


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(model: nn.Module, cfg: RaceConfig, kind: str = "sgd") -> torch.optim.Optimizer:
    """SGD with ``cfg``'s momentum and weight decay (the race's), or Adam (default betas) with its weight decay."""
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if kind != "sgd":
        raise M.ConfigError(f"Unknown optimizer {kind!r}; choose one of {', '.join(OPTIMIZERS)}.")
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def race(race_models: dict[str, nn.Module], train: Dataset, test: Dataset, cfg: RaceConfig,
         optimizer: str = "sgd") -> Iterator[dict]:
    """Train every model on the same batches; yield one record per step.

    A record is ``{"step": int (1-based), "steps": total, "elapsed_s": float, "steps_per_s": float,
    "runs": {name: run}}`` with, for each model, ``run = {"loss": float | None, "acc": float | None,
    "test_acc": float | None, "grad_norms": list[float] | None, "diverged": bool, "message": str | None}``.
    ``loss``/``acc`` are the training batch's (before the update), ``test_acc`` is set every
    ``cfg.eval_every`` steps and at the last step (else None), ``grad_norms`` holds one L2 norm per
    conv/linear layer in ``layer_params`` order. A model whose loss becomes NaN, inf or above
    ``DIVERGED_LOSS`` stops: its record says ``diverged`` with a message, its later records have ``None``
    numbers, and the others keep going.
    Models are trained in place, on ``cfg.device``, by ``make_optimizer(optimizer)``: the race's SGD, or Adam for a
    shipped pair whose plain twin SGD leaves at guessing (resviz/builtin_pair.py).
    """
    device = torch.device(cfg.device)
    train_x, train_y = _tensors(train)
    test_x, test_y = _tensors(test)
    test_x, test_y = test_x[:cfg.eval_size], test_y[:cfg.eval_size]
    refresh_x = train_x[:cfg.bn_refresh]  # a fixed set of training images
    check_race(train_x, train_y, race_models, cfg)
    names = list(race_models)
    opts, grads = {}, {}
    for name, m in race_models.items():
        m.to(device).train()
        opts[name] = make_optimizer(m, cfg, optimizer)
        grads[name] = layer_params(m)[1]
    alive = dict.fromkeys(names, True)
    start = time.perf_counter()
    for step, idx in enumerate(batch_indices(len(train_x), cfg.batch_size, cfg.steps, cfg.seed), start=1):
        xb = train_x[idx].to(device, non_blocking=True)
        yb = train_y[idx].to(device, non_blocking=True)
        for opt in opts.values():
            for group in opt.param_groups:
                group["lr"] = cfg.lr_at(step)  # the same schedule for every network
        stats = {}
        for name in names:
            if alive[name]:
                stats[name] = _train_step(race_models[name], opts[name], grads[name], xb, yb)
        host = torch.cat(list(stats.values())).cpu().tolist() if stats else []  # the one sync per step
        runs, pos = {}, 0
        for name in names:
            run = {"loss": None, "acc": None, "test_acc": None, "grad_norms": None, "diverged": False,
                   "message": None}
            if name in stats:
                k = len(grads[name])
                loss, acc, norms = host[pos], host[pos + 1], host[pos + 2:pos + 2 + k]
                pos += 2 + k
                run.update(loss=loss, acc=acc, grad_norms=norms)
                if not math.isfinite(loss) or loss > DIVERGED_LOSS:
                    alive[name] = False
                    run.update(diverged=True, message=(
                        f"{name} diverged at step {step}: its loss became {loss:.3g}. Its run stops here; "
                        f"try a smaller learning rate (now {cfg.lr:g})."))
                elif cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                    refresh_batch_norm(race_models[name], refresh_x)
                    run["test_acc"] = evaluate(race_models[name], test_x, test_y)
            runs[name] = run
        elapsed = time.perf_counter() - start
        yield {"step": step, "steps": cfg.steps, "elapsed_s": elapsed, "steps_per_s": step / elapsed,
               "runs": runs}


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, layer_weights: list[torch.Tensor],
                xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """One SGD step; returns [loss, acc, grad norm per layer] as one tensor, still on the device."""
    opt.zero_grad(set_to_none=True)
    logits = model(xb)  # (B, num_classes)
    loss = F.cross_entropy(logits, yb)
    loss.backward()
    norms = torch._foreach_norm([w.grad for w in layer_weights])  # one fused kernel, not one per layer
    acc = (logits.argmax(1) == yb).float().mean()
    opt.step()
    return torch.stack([loss.detach(), acc, *norms])


def bare_loop(race_models: dict[str, nn.Module], train: Dataset, cfg: RaceConfig) -> None:
    """The baseline for the speed check: the same models, batches and optimizer, no statistics."""
    device = torch.device(cfg.device)
    train_x, train_y = _tensors(train)
    opts = {n: torch.optim.SGD(m.to(device).train().parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay) for n, m in race_models.items()}
    for idx in batch_indices(len(train_x), cfg.batch_size, cfg.steps, cfg.seed):
        xb, yb = train_x[idx].to(device), train_y[idx].to(device)
        for name, m in race_models.items():
            opts[name].zero_grad(set_to_none=True)
            F.cross_entropy(m(xb), yb).backward()
            opts[name].step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the weights (safe to keep in a session and to torch.save)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def state_dict_bytes(state_dict: dict) -> bytes:
    """``torch.save`` into bytes, for a download button; load with ``torch.load(..., weights_only=True)``."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    return buf.getvalue()
