"""The training race: several networks trained side by side on the same batches, as a generator of records.

    models = make_race_models(get_config("resnet56"), seed=0, include_shallow_plain=True)
    for rec in race(models, train, test, RaceConfig(steps=100)):
        print(rec["step"], {name: r["loss"] for name, r in rec["runs"].items()})

Every model sees the same batches (one ``torch.Generator`` per run, never the global RNG: many students
train at once) and gets its own SGD optimizer with the same settings. Per-step statistics stay cheap: one
fused norm over the layer gradients per model and one device-to-CPU copy per step for all models.

A page holds one ``Race`` (the models, the live generator and a typed ``RaceHistory``); the verdicts and the
charts read the same smoothed curves (``smooth``).
"""
from __future__ import annotations

import enum
import io
import math
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable, Generator, Hashable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from resviz import models as M
from resviz import pair, runs
from resviz.inputs import budget, data

DIVERGED_LOSS = 1e4  # a cross-entropy this large means logits off by thousands: the run has blown up
SMOOTHING = 0.1  # weight of the newest batch in the smoothed loss (the chart's bold line and the verdicts)


class Role(enum.Enum):
    """What a network is in the race; the charts colour by role, the verdicts compare roles."""
    RESNET = "ResNet"
    PLAIN = "plain twin"
    SHALLOW = "shallower plain net"


class RacePair(enum.Enum):
    """Which networks race: the sidebar's model and its twin, or the paper's deeper ResNet-56 and plain-56."""
    SIDEBAR = "sidebar"
    DEEP = "resnet56"

    def config(self, sidebar_cfg: M.ResNetConfig) -> M.ResNetConfig:
        """The residual config this pair races."""
        return sidebar_cfg if self is RacePair.SIDEBAR else M.get_config(self.value)


class DataSource(enum.Enum):
    """Where the race's images come from; the value is the data's name in labels ("trained ... on CIFAR10")."""
    BUILTIN = "Built-in shapes"
    CIFAR10 = "CIFAR10"
    MNIST = "MNIST"
    FASHION_MNIST = "FashionMNIST"
    ZIP = "My image folder"
    TEACHER = "The teacher's image folders"

    @property
    def torchvision(self) -> bool:
        return self.value in data.TORCHVISION_NAMES

    @property
    def shared(self) -> bool:
        """Whether the loaded images can be shared by the whole class (a student's own zip is not)."""
        return self is not DataSource.ZIP


def offered_sources(teacher_folders: bool) -> list[DataSource]:
    """The data a student may race on: the teacher's folders only where the teacher named some."""
    return [s for s in DataSource if teacher_folders or s is not DataSource.TEACHER]


@dataclass(frozen=True)
class DataRequest:
    """The images a race asks for; hashable, so a shared cache can key on it (the zip's bytes excepted)."""
    source: DataSource = DataSource.BUILTIN
    size: int = 32
    channels: int = 3
    download: bool = False  # torchvision sets only: fetch them if missing
    folder: str = ""  # the teacher's folder, by name
    upload: bytes | None = field(default=None, compare=False, repr=False)  # the student's zip

    @classmethod
    def for_race(cls, cfg: M.ResNetConfig, source: DataSource, download: bool = False, folder: str = "",
                 upload: bytes | None = None) -> DataRequest:
        """The images to race ``cfg`` on, at the size and channels ``data_shape_for`` picks."""
        size, channels = data_shape_for(cfg, source)
        return cls(source, size, channels, download, folder, upload)

    @property
    def key(self) -> tuple:
        """What the loaded images depend on, as plain values (a shared cache's key)."""
        return ("race-data", self.source.value, self.size, self.channels, self.download, self.folder)

    def load(self, report: list[str] | None = None) -> tuple[TensorDataset, TensorDataset, list[str]]:
        """``(train, test, class_names)``; DatasetError in plain words when the data cannot be had."""
        if self.source is DataSource.BUILTIN:
            return data.builtin_dataset(n_train=4000, n_test=1000, size=self.size, channels=self.channels, seed=0)
        if self.source is DataSource.TEACHER:
            return data.load_image_folder(data.teacher_folders()[self.folder], self.size, self.channels)
        if self.source is DataSource.ZIP:
            if self.upload is None:
                raise data.DatasetError("Upload a zip of an image folder first.")
            return data.load_image_folder(self.upload, self.size, self.channels, report=report)
        return data.load_torchvision_dataset(self.source.value, download=self.download)


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


def _tensors(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(ds, TensorDataset):
        return ds.tensors[0], ds.tensors[1]
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.as_tensor(ys)


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


def race(race_models: dict[str, nn.Module], train: Dataset, test: Dataset, cfg: RaceConfig) -> Iterator[dict]:
    """Train every model on the same batches; yield one record per step.

    A record is ``{"step": int (1-based), "steps": total, "elapsed_s": float, "steps_per_s": float,
    "runs": {name: run}}`` with, for each model, ``run = {"loss": float | None, "acc": float | None,
    "test_acc": float | None, "grad_norms": list[float] | None, "diverged": bool, "message": str | None}``.
    ``loss``/``acc`` are the training batch's (before the update), ``test_acc`` is set every
    ``cfg.eval_every`` steps and at the last step (else None), ``grad_norms`` holds one L2 norm per
    conv/linear layer in ``layer_params`` order. A model whose loss becomes NaN, inf or above
    ``DIVERGED_LOSS`` stops: its record says ``diverged`` with a message, its later records have ``None``
    numbers, and the others keep going.
    Models are trained in place, on ``cfg.device``.
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
        opts[name] = torch.optim.SGD(m.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                     weight_decay=cfg.weight_decay)
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


# --- the history a page keeps, and what it says ------------------------------------------------------------


def smooth(values: list[float | None], alpha: float = SMOOTHING) -> list[float | None]:
    """Exponential moving average that skips gaps (None/NaN/inf): the chart's bold line and the verdicts' input."""
    out, avg = [], None
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(None)
            continue
        avg = v if avg is None else (1 - alpha) * avg + alpha * v
        out.append(avg)
    return out


@dataclass
class RunHistory:
    """One network's curves so far (plain lists: cheap to keep in a session and to chart)."""
    name: str  # "ResNet-20"
    role: Role
    layers: list[str]  # conv/linear layer names, the rows of the gradient heatmap
    step: list[int] = field(default_factory=list)  # steps with a finite record
    loss: list[float] = field(default_factory=list)  # training-batch loss, before the update
    acc: list[float] = field(default_factory=list)  # training-batch accuracy
    grad_norms: list[list[float]] = field(default_factory=list)  # one list per step, in ``layers`` order
    test_step: list[int] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    message: str | None = None  # why it stopped (divergence)

    @property
    def smoothed_loss(self) -> list[float | None]:
        return smooth(self.loss)


@dataclass
class RaceHistory:
    """Every network's curves, in ``Role`` order, plus the race's clock."""
    runs: dict[str, RunHistory]
    steps: int  # planned
    step: int = 0  # done
    elapsed: list[float] = field(default_factory=list)  # seconds since the start, per step
    steps_per_s: float = 0.0
    classes: int = 0  # what guessing scores against: loss ln(classes), accuracy 1 / classes (0: unknown)
    held_out: int = 0  # images each held-out accuracy is measured on (its noise)

    def by_role(self, role: Role) -> RunHistory | None:
        return next((r for r in self.runs.values() if r.role is role), None)

    def add(self, rec: dict) -> RaceHistory:
        """Append one ``race`` record (a stopped run adds nothing more)."""
        self.step, self.steps_per_s = rec["step"], rec["steps_per_s"]
        self.elapsed.append(rec["elapsed_s"])
        for name, r in rec["runs"].items():
            run = self.runs[name]
            if r["loss"] is not None:
                run.step.append(rec["step"])
                run.loss.append(r["loss"])
                run.acc.append(r["acc"])
                run.grad_norms.append(r["grad_norms"])
            if r["test_acc"] is not None:
                run.test_step.append(rec["step"])
                run.test_acc.append(r["test_acc"])
            if r["diverged"]:
                run.message = r["message"]
        return self


ROLES_IN_ORDER = (Role.RESNET, Role.PLAIN, Role.SHALLOW)  # make_race_models' order


def new_history(race_models: dict[str, nn.Module], steps: int, roles: tuple[Role, ...] = ROLES_IN_ORDER,
                classes: int = 0, held_out: int = 0) -> RaceHistory:
    """An empty history for these models (roles in ``make_race_models`` order unless given)."""
    runs = {name: RunHistory(name, role, layer_params(m)[0]) for (name, m), role in zip(race_models.items(), roles)}
    return RaceHistory(runs, steps, classes=classes, held_out=held_out)


GAP_MARGIN = 0.1  # "clearly below": a smoothed training loss lower by at least this much (nats)
CHECKED_SEEDS = (0, 1, 2, 3, 4)  # the seeds the recipes were swept and the claims are checked on


class Ordering(enum.Enum):
    """An ordering of smoothed training losses that He et al. (2016, Fig. 1, 4 and 6) show: (lower, higher)."""
    SHORTCUTS_HELP = (Role.RESNET, Role.PLAIN)  # ResNet-N below plain-N
    DEGRADATION = (Role.SHALLOW, Role.PLAIN)  # the deeper plain net above the shallower one
    NO_DEGRADATION = (Role.RESNET, Role.SHALLOW)  # the deep ResNet no worse than the shallower plain net

    @property
    def required(self) -> float:
        """How far below the lower one must be for the ordering to show: clearly, or (no worse) at all."""
        return 0.0 if self is Ordering.NO_DEGRADATION else GAP_MARGIN


@dataclass(frozen=True)
class Margin:
    """How one ordering stands on one race: the smoothed-loss difference (higher minus lower) at the end."""
    ordering: Ordering
    end: float  # > 0: the expected network is lower at the last step both ran
    since: int | None  # the step from which the difference stayed >= ``required`` to the end; None if not at the end
    last_step: int

    @property
    def shows(self) -> bool:
        return self.since is not None


def curve_margins(curves: dict[Role, list[float | None]], margin: float | None = None) -> dict[Ordering, Margin]:
    """Margins of every ordering whose two networks both ran, from smoothed losses indexed by step - 1.

    ``margin`` overrides ``GAP_MARGIN`` for the clear-gap orderings (the sweep tries others)."""
    out = {}
    for ordering in Ordering:
        lower, higher = ordering.value
        if lower not in curves or higher not in curves:
            continue
        need = ordering.required if margin is None or ordering is Ordering.NO_DEGRADATION else margin
        diffs = [(i + 1, b - a) for i, (a, b) in enumerate(zip(curves[lower], curves[higher]))
                 if a is not None and b is not None]
        if not diffs:
            continue
        since = None
        for step, d in reversed(diffs):
            if d < need:
                break
            since = step
        out[ordering] = Margin(ordering, diffs[-1][1], since, diffs[-1][0])
    return out


def race_margins(history: RaceHistory, margin: float | None = None) -> dict[Ordering, Margin]:
    """``curve_margins`` of a race's smoothed losses, as charted (a diverged network's curve ends where it did)."""
    curves = {}
    for run in history.runs.values():
        per_step: list[float | None] = [None] * history.step
        for step, v in zip(run.step, run.smoothed_loss):
            per_step[step - 1] = v
        curves[run.role] = per_step
    return curve_margins(curves, margin)


class Tone(enum.Enum):
    """How a verdict is shown (the value names the Streamlit call)."""
    SUCCESS = "success"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class RaceContext:
    """What a verdict needs to explain a surprise: the recipe recommended for these networks and what was run."""
    recommended: RaceConfig
    used: RaceConfig
    builtin_data: bool = True
    swept_model: bool = True  # the recommended recipe was chosen by the sweep for this very network


def _why(ctx: RaceContext | None, step: int) -> str:
    """Plain words on what in this run differs from the recipe that was checked to show the paper's ordering."""
    if ctx is None:
        return ""
    rec, used, causes = ctx.recommended, ctx.used, []
    if step < rec.steps:
        causes.append(f"the race ran {step} steps and the recipe runs {rec.steps}: the gap needs time to open")
    if used.lr != rec.lr:
        causes.append(f"the learning rate is {used.lr:g} where the recipe uses {rec.lr:g}: too large a rate throws deep "
                      "networks off at the start (at the paper's 0.1, ResNet-56 stays at guessing level in a race this "
                      "short), too small a rate makes every network crawl at the same pace")
    if used.batch_size != rec.batch_size:
        causes.append(f"the batch size is {used.batch_size} where the recipe uses {rec.batch_size} (the paper "
                      "scales the learning rate with the batch: 0.1 at 128)")
    if used.weight_decay != rec.weight_decay:
        causes.append(f"the weight decay is {used.weight_decay:g} where the recipe uses {rec.weight_decay:g}")
    if not ctx.builtin_data:
        causes.append("the data is not the built-in shapes the recipe was checked on")
    if not ctx.swept_model:
        causes.append("the recipe was checked on ResNet-20 and ResNet-56; this network is another one")
    if not causes and used.seed not in CHECKED_SEEDS:
        causes.append(f"seed {used.seed} was not among those the recipe was checked on (0-4): one short run is one "
                      "sample, while the paper's curves are long runs")
    if not causes:
        return (" This run used the recommended recipe on a checked seed, where the sweep showed the paper's "
                "ordering: a surprise worth reporting.")
    return " What differs from the recipe that shows it: " + "; ".join(causes) + "."


def at_chance(run: RunHistory, history: RaceHistory) -> bool:
    """Whether ``run`` ends where guessing is: its smoothed training loss within ``GAP_MARGIN`` of ln(classes) or
    above it, and (when measured) its last held-out accuracy within its 95% interval of 1 / classes."""
    ends = [v for v in run.smoothed_loss if v is not None]
    if not history.classes or not ends or ends[-1] < math.log(history.classes) - GAP_MARGIN:
        return False
    if run.test_acc and history.held_out:
        return pair.is_guessing(run.test_acc[-1], history.held_out, 1 / history.classes)
    return True


def race_messages(history: RaceHistory, ctx: RaceContext | None = None, live: bool = False) -> list[tuple[Tone, str]]:
    """What the race showed, in words that never go beyond its chart: divergences, then (once the race is over,
    not ``live``) whether two or more networks ended at guessing level (no ordering between those), then each
    ordering of the smoothed training losses at its end, compared with what He et al. (2016) show."""
    out = [(Tone.WARNING, r.message) for r in history.runs.values() if r.message]
    if live:
        return out  # "ends" would be premature; the loss chart marks a clear lead as it happens
    why = _why(ctx, history.step)
    guessing = [r for r in history.runs.values() if not r.message and at_chance(r, history)]
    if len(guessing) >= 2:
        out.append((Tone.INFO, _neither_learned(guessing, history, ctx, why)))
    stuck = {r.name for r in guessing}
    for ordering, m in race_margins(history).items():
        lower, higher = (history.by_role(role) for role in ordering.value)
        if lower.message or higher.message:
            continue  # a diverged network's curve stops: no ordering to read at the end
        if len(stuck) >= 2 and {lower.name, higher.name} <= stuck:
            continue  # two networks at guessing level: no ordering, said once above
        lo, hi = lower.smoothed_loss[-1], higher.smoothed_loss[-1]
        tone, text = _verdict(ordering, m, lower.name, higher.name, lo, hi, history, why)
        out.append((tone, text + "".join(f" {r.name} ended at guessing level ({_guess_words(r, history)})."
                                         for r in (lower, higher) if r.name in stuck)))
    return out


def _guess_words(run: RunHistory, history: RaceHistory) -> str:
    """'loss 2.31, ln 10 = 2.30; held-out accuracy 10% (95% interval 8-12% on 1000 images), guessing 10%'"""
    k = history.classes
    words = f"smoothed loss {run.smoothed_loss[-1]:.2f}, where guessing pays ln {k} = {math.log(k):.2f}"
    if run.test_acc and history.held_out:
        words += (f"; held-out accuracy {pair.interval_words(run.test_acc[-1], history.held_out)}, "
                  f"guessing {1 / k:.0%}")
    return words


def _neither_learned(guessing: list[RunHistory], history: RaceHistory, ctx: RaceContext | None, why: str) -> str:
    """Networks that all ended at guessing level: no ordering between them, and what in the run explains it."""
    names = ", ".join(r.name for r in guessing[:-1]) + f" nor {guessing[-1].name}"
    each = "; ".join(f"{r.name}: {_guess_words(r, history)}" for r in guessing)
    k = math.log(history.classes)
    top, step, name = max((max(r.loss), r.step[r.loss.index(max(r.loss))], r.name) for r in guessing)
    jumped = ""
    if top > k + 1:  # well above what guessing pays: the loss blew up before it settled
        large = ctx is not None and ctx.used.lr > ctx.recommended.lr
        jumped = (f" {name}'s batch loss jumped to {top:.3g} at step {step}, far above the {k:.2f} that guessing pays"
                  + (f": at learning rate {ctx.used.lr:g}, {ctx.used.lr / ctx.recommended.lr:g} times the recipe's "
                     f"{ctx.recommended.lr:g}, each step moved the weights too far." if large else "."))
    return (f"**Neither {names} learned the images in this run**, so there is no ordering to compare with He et "
            f"al. (2016): {each}.{jumped}{why}")


def _verdict(ordering: Ordering, m: Margin, lower: str, higher: str, lo: float, hi: float, history: RaceHistory,
             why: str) -> tuple[Tone, str]:
    """One ordering's box: the paper's ordering beyond the margin (success), a difference inside the margin (info:
    no ordering), or the reverse ordering beyond it (warning)."""
    nums = f"({lower} {lo:.2f}, {higher} {hi:.2f}: smoothed training loss at step {m.last_step})"
    when = (f" since step {m.since}, {history.elapsed[m.since - 1]:.0f} s into the race."
            if m.shows and m.since - 1 < len(history.elapsed) else "")
    since = f" It has been at least {GAP_MARGIN:g} lower{when}" if when else ""
    close = abs(m.end) < GAP_MARGIN  # a difference smaller than the margin is no ordering, either way
    gap = (f"{lower} ends only {m.end:.2f} below {higher}" if m.end > 0 else
           f"{lower} ends {-m.end:.2f} above {higher}" if m.end < 0 else f"{lower} and {higher} end level")
    inside = (f"{gap} {nums}: less than the {GAP_MARGIN:g} this page calls a clear gap, so this run shows no "
              f"ordering, neither the paper's nor its opposite.{why}")
    if ordering is Ordering.SHORTCUTS_HELP:
        if m.shows:
            return Tone.SUCCESS, (f"**{lower} trains faster than {higher}**: its loss ends {m.end:.2f} lower {nums}."
                                  f"{since} Same start, same batches, same recipe: the shortcuts alone make the "
                                  "difference, as in He et al. (2016, Fig. 4 and 6).")
        if close:
            return Tone.INFO, inside
        return Tone.WARNING, (f"**{higher} ends below {lower}** {nums}, by more than the {GAP_MARGIN:g} this page "
                              f"calls a clear gap: the opposite of what He et al. (2016, Fig. 4 and 6) show.{why}")
    if ordering is Ordering.DEGRADATION:
        if m.shows:
            return Tone.SUCCESS, (f"**Degradation: the deeper {higher} trains worse than {lower}**: its loss ends "
                                  f"{m.end:.2f} higher {nums}.{f' The gap has been at least {GAP_MARGIN:g}{when}' if when else ''} "
                                  "This is training "
                                  "loss, so it is not overfitting: He et al. (2016, Fig. 1 and 6) found the same with "
                                  "training error.")
        if close:
            return Tone.INFO, (f"The degradation problem does not show clearly in this run: {inside} He et al. "
                               "(2016, Fig. 1) find the deeper plain net clearly higher.")
        return Tone.WARNING, (f"The degradation problem does not show in this run: {higher} ends {-m.end:.2f} below "
                              f"{lower} {nums}, by more than the {GAP_MARGIN:g} this page calls a clear gap, where "
                              f"He et al. (2016, Fig. 1) find the deeper plain net clearly higher.{why}")
    if m.end >= 0:
        return Tone.SUCCESS, (f"**With shortcuts, depth no longer hurts**: {lower} ends at or below the shallower "
                              f"{higher} {nums}. In He et al. (2016, Fig. 6), unlike plain nets, ResNets reach lower "
                              "training error as they get deeper.")
    if close:
        return Tone.INFO, inside
    return Tone.WARNING, (f"{lower} ends above the shallower {higher} {nums}, by more than the {GAP_MARGIN:g} this "
                          "page calls a clear gap, while in He et al. (2016, Fig. 6), unlike plain nets, ResNets "
                          f"reach lower training error as they get deeper.{why}")


def status_line(history: RaceHistory, running: bool) -> str:
    """Steps per second and each live network's latest batch loss, for the line above the charts."""
    losses = [f"{r.name}: loss {r.loss[-1]:.3f}" for r in history.runs.values() if r.loss and not r.message]
    return " · ".join([f"**{history.steps_per_s:.1f} steps/s**", *losses] + (["*running…*"] if running else []))


# --- a race as a page holds it -----------------------------------------------------------------------------


RACE_IMAGE_SIZE = 16  # built-in images for the race: 4x fewer pixels than 32, so 3-4x more steps per second; the
#                      CIFAR nets are convolutions and a global average pool, so they run unchanged (8x8 -> 4x4 maps
#                      in the last stage)
RECIPES = {  # chosen by scripts/sweep_race.py (its table: assets/sweep_race.txt); the same for every network
    "resnet20": RaceConfig(lr=0.01, batch_size=128, steps=300),
    "resnet56": RaceConfig(lr=0.01, batch_size=128, steps=300),
}
LEARNING_RATES = (0.001, 0.003, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)  # the page's:
#                 the sweep's 0.005-0.1 (scripts/sweep_race.py), smaller ones, and ones that make a race diverge
WHY_THE_RATE = ("0.01 is the paper's warm-up rate (0.1x its 0.1 at batch 128, section 4.2). At 0.1 itself, ResNet-56 "
                "stays at guessing level (loss ln 10 = 2.30) for most or all of a 300-step race on these images "
                "while plain-20 learns (scripts/sweep_race.py, seeds 0-2)")


@dataclass(frozen=True)
class Recipe:
    """The recommended settings for a race: what the sweep chose for the nearest swept network."""
    config: RaceConfig
    swept: str  # the preset the sweep chose it for ("resnet20", "resnet56")
    exact: bool  # the race's ResNet is that very preset (else the recipe is borrowed from the nearest depth)

    def describe(self) -> str:
        """The recipe in words, for the page."""
        c = self.config
        warm = (f", {c.warmup_factor:g}x for the first {c.warmup_steps} steps" if c.warmup_steps else "")
        decay = (f", divided by 10 after {' and '.join(f'{f:.0%}' for f in c.decay_at)} of the run"
                 if c.decay_at else "")
        return (f"SGD, learning rate {c.lr:g} at batch {c.batch_size}{warm}{decay}, momentum {c.momentum:g}, weight "
                f"decay {c.weight_decay:g}, {c.steps} steps, built-in images at {RACE_IMAGE_SIZE}x{RACE_IMAGE_SIZE}; "
                f"chosen by a sweep on {self.swept.replace('resnet', 'ResNet-')} for seeds 0-4"
                + ("" if self.exact else " (the nearest depth swept)"))

    def with_settings(self, lr: float, batch_size: int, steps: int, weight_decay: float, seed: int,
                      device: str = "cpu") -> RaceConfig:
        """This recipe with a student's settings (the rest, warm-up and decay, stays the recipe's)."""
        return replace(self.config, lr=lr, batch_size=int(batch_size), steps=int(steps), weight_decay=weight_decay,
                       seed=int(seed), device=device)

    def in_use(self, used: RaceConfig) -> str:
        """The settings a race runs with, for the page, and whether they differ from this recipe's."""
        c = self.config
        changed = (used.lr, used.batch_size, used.weight_decay) != (c.lr, c.batch_size, c.weight_decay)
        return (f"Recipe: learning rate {used.lr:g} at batch {used.batch_size}, weight decay {used.weight_decay:g}, "
                f"seed {used.seed}" + (" (**changed** from the recommended)" if changed else ""))


def recipe_for(cfg: M.ResNetConfig) -> Recipe:
    """The recommended recipe for racing ``cfg``: ResNet-56's for nets of 44 layers or more, else ResNet-20's."""
    name = "resnet56" if cfg.depth >= 44 else "resnet20"
    same = dict(residual=True, input_size=32, in_channels=3, num_classes=10, name="")
    exact = replace(cfg, **same) == replace(M.get_config(name), **same)
    return Recipe(RECIPES[name], name, exact)


def data_shape_for(cfg: M.ResNetConfig, source: DataSource = DataSource.BUILTIN) -> tuple[int, int]:
    """(size, channels) to draw the race's images at: built-in ones at ``RACE_IMAGE_SIZE``; a folder's at the
    model's own size where cheap, else 32x32."""
    size = cfg.input_size if 16 <= cfg.input_size <= 64 else 32
    if source is DataSource.BUILTIN:
        size = RACE_IMAGE_SIZE
    return size, cfg.in_channels if cfg.in_channels in (1, 3) else 3


def fit_config(cfg: M.ResNetConfig, train: Dataset, num_classes: int) -> tuple[M.ResNetConfig, list[str]]:
    """``cfg`` rebuilt to take this data (channels, size, classes), and plain-words notes on what changed."""
    x = _tensors(train)[0]
    channels, size = int(x.shape[1]), int(x.shape[-1])
    fitted = replace(cfg, residual=True, in_channels=channels, input_size=size, num_classes=num_classes)
    notes = []
    changes = [f"{what} {new} instead of {old}" for what, old, new in
               (("input channels:", cfg.in_channels, channels), ("input size:", cfg.input_size, size),
                ("classes:", cfg.num_classes, num_classes)) if old != new]
    if changes:
        notes.append("The model was rebuilt to fit the data (" + "; ".join(changes) + "); everything else is "
                     "the model you picked.")
    if cfg.stem == "imagenet" and size <= 64:
        notes.append(f"An ImageNet stem (7x7 stride-2 conv and max-pool) shrinks {size}x{size} images 4x at once: "
                     "it trains, but slowly and poorly. CIFAR presets are made for small images.")
    return fitted, notes


@dataclass(eq=False)
class Race:
    """One race as a page keeps it in the session: the models, the live generator and what it recorded."""
    cfg: M.ResNetConfig  # the ResNet's config, fitted to the data
    models: dict[str, nn.Module]  # in ``Role`` order
    history: RaceHistory
    gen: Iterator[dict]
    class_names: tuple[str, ...]
    data_name: str
    notes: list[str] = field(default_factory=list)
    context: RaceContext | None = None  # the recommended recipe and what was run: the verdicts' explanations
    held_out: int = 0  # images each evaluation measures accuracy on (the same ones every time)
    every: int = 0  # steps between evaluations
    refresh: int = 0  # training images that re-estimate batch-norm statistics before each evaluation
    running: bool = True
    trained: pair.TrainedPair | None = None  # what it handed to the other pages, once finished

    @property
    def chance(self) -> float:
        return 1 / max(1, len(self.class_names))

    def advance(self) -> Iterator[RaceHistory]:
        """Run the race on, yielding the history after every step; ends when the race does."""
        for rec in self.gen:
            yield self.history.add(rec)
        self.running = False

    def accuracy_note(self) -> str:
        """What the held-out accuracy is measured on, for the caption under its chart."""
        if not self.every or not self.held_out:
            return "Held-out accuracy is not measured in this race."
        return (f"Held-out accuracy: the same {self.held_out} {self.data_name} images at every evaluation (every "
                f"{self.every} steps), never trained on; batch-norm statistics are re-estimated on {self.refresh} "
                "training images just before, so the curve follows the weights, not the running averages. "
                f"{self.held_out} images give about ±{_binomial_points(self.held_out):.0f} accuracy points.")

    def messages(self) -> list[tuple[Tone, str]]:
        """What the race showed, in words (``race_messages``; while it runs, divergences only)."""
        return race_messages(self.history, self.context, live=self.running)

    def stop(self) -> None:
        """Stop here (what was learned so far is kept)."""
        if self.running:
            self.running = False
            self.notes.append(f"Stopped by you at step {self.history.step}.")

    def trained_pair(self) -> pair.TrainedPair:
        """The trained ResNet and its twin, as the other pages read them (CPU weights, class names, data)."""
        if self.trained is None:
            resnet, plain = list(self.models.values())[:2]
            name = next(iter(self.models))
            self.trained = pair.TrainedPair(
                cfg=self.cfg, state_dict=cpu_state_dict(resnet), plain_state_dict=cpu_state_dict(plain),
                label=f"{name} trained {self.history.step} steps on {self.data_name}", class_names=self.class_names,
                data_name=self.data_name, steps=self.history.step)
        return self.trained


def new_race(cfg: M.ResNetConfig, train: Dataset, test: Dataset, class_names: list[str], race_cfg: RaceConfig,
             include_shallow_plain: bool = False, notes: list[str] | None = None, data_name: str = "",
             source: DataSource | None = None) -> Race:
    """A race ready to run: the config fitted to the data, the models, the generator and an empty history.

    With ``source``, the race knows its recommended recipe (``recipe_for``) and can explain a surprise."""
    recipe = recipe_for(cfg)
    cfg, fit_notes = fit_config(cfg, train, len(class_names))
    race_models = make_race_models(cfg, seed=race_cfg.seed, include_shallow_plain=include_shallow_plain,
                                   device=race_cfg.device)
    context = None if source is None else RaceContext(recipe.config, race_cfg, source is DataSource.BUILTIN,
                                                      recipe.exact)
    held_out = min(race_cfg.eval_size, len(test))
    history = new_history(race_models, race_cfg.steps, classes=len(class_names),
                          held_out=held_out if race_cfg.eval_every else 0)
    return Race(cfg=cfg, models=race_models, history=history,
                gen=race(race_models, train, test, race_cfg), class_names=tuple(class_names), data_name=data_name,
                notes=[*(notes or []), *fit_notes], context=context, held_out=held_out,
                every=race_cfg.eval_every, refresh=min(race_cfg.bn_refresh, len(train)))


def _binomial_points(n: int, p: float = 0.5) -> float:
    """Two standard errors of an accuracy measured on ``n`` images, in points (the worst case, p = 0.5)."""
    return 200 * math.sqrt(p * (1 - p) / n)


# --- the default races, as the page runs them (benchmarks and claims) ----------------------------------------

CLAIM_TEXTS = {
    Ordering.SHORTCUTS_HELP: "{lower}'s smoothed training loss ends at least {margin:g} below {higher}'s",
    Ordering.DEGRADATION: "the deeper {higher} ends at least {margin:g} above the shallower {lower} (degradation)",
    Ordering.NO_DEGRADATION: "{lower} ends no worse than the shallower {higher}",
}


CLAIM_LEARNED = ("at most one network ends at guessing level (every other smoothed training loss ends at least "
                 "{margin:g} below ln {classes}), so the page reads the orderings")


def default_race(preset: str, shallow: bool, seed: int, image_size: int = RACE_IMAGE_SIZE,
                 steps: float = 1.0, eval_every: int | None = None) -> Race:
    """The race the page runs with its defaults (recommended recipe, built-in images, ``seed``), optionally
    scaled down: smaller images and a fraction of the steps (the warm-up scales with them)."""
    cfg = M.get_config(preset)
    rec = recipe_for(cfg).config
    used = replace(rec, seed=seed, steps=max(1, round(rec.steps * steps)),
                   warmup_steps=round(rec.warmup_steps * steps),
                   eval_every=rec.eval_every if eval_every is None else eval_every)
    train, test, names = DataRequest(DataSource.BUILTIN, image_size, 3).load()
    race_ = new_race(cfg, train, test, names, used, shallow, data_name=DataSource.BUILTIN.value,
                     source=DataSource.BUILTIN)
    for _ in race_.advance():
        pass
    return race_


MAX_DROP = 10.0  # accuracy points: more between two evaluations would be a swing a class notices


def max_accuracy_drop(history: RaceHistory) -> float:
    """The largest fall of any network's held-out accuracy between two evaluations, in points (0 if none)."""
    drops = [100 * (a - b) for r in history.runs.values() for a, b in zip(r.test_acc, r.test_acc[1:])]
    return max([0.0, *drops])


CI_SCALE = {"resnet20": dict(image_size=8, steps=0.5), "resnet56": dict(image_size=8, steps=1.0)}  # the claims
# check in CI: the page's recipe on 8x8 images (the page: 16x16), the pair for half its steps; sized by the sweep
# (assets/sweep_race.txt): the trio needs its 300 steps at 8x8 for plain-20 to pull clear of plain-56 on every seed
CLAIM_WORKERS = 2  # races run side by side in threads (one torch thread each): a 2-core CI machine is kept busy


def claims(seeds: tuple[int, ...], full: bool) -> list:
    """He et al.'s orderings of the smoothed training loss on the page's default races (ResNet-20 and its twin;
    ResNet-56, its twin and plain-20), one claim per ordering and seed; at full size also the held-out curve's
    largest fall between two evaluations."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(preset, shallow, seed) for preset, shallow in (("resnet20", False), ("resnet56", True)) for seed in seeds]

    def one(job) -> list:
        preset, shallow, seed = job
        race_ = default_race(preset, shallow, seed, **({} if full else dict(CI_SCALE[preset], eval_every=0)))
        return _race_claims(race_, preset, seed, full)

    with ThreadPoolExecutor(CLAIM_WORKERS) as pool:
        return [c for found in pool.map(one, jobs) for c in found]


def _race_claims(race_: Race, preset: str, seed: int, full: bool) -> list:
    from resviz.claims import Claim

    h, out = race_.history, []
    guess = math.log(h.classes)  # the verdicts' guard: two networks at guessing level give no ordering
    learned = sorted(((guess - GAP_MARGIN - r.smoothed_loss[-1], r.name) for r in h.runs.values()), reverse=True)
    out.append(Claim("training", CLAIM_LEARNED.format(margin=GAP_MARGIN, classes=h.classes), seed, learned[-2][0],
                     "loss", ", ".join(f"{name} {guess - GAP_MARGIN - g:.3f}" for g, name in learned)
                     + f" against ln {h.classes} = {guess:.3f}"))
    for ordering, m in race_margins(h).items():
        lower, higher = (h.by_role(role).name for role in ordering.value)
        text = CLAIM_TEXTS[ordering].format(lower=lower, higher=higher, margin=ordering.required)
        out.append(Claim("training", text, seed, m.end - ordering.required, "loss",
                         f"{higher} - {lower} = {m.end:+.3f} at step {m.last_step}, "
                         + (f"clear from step {m.since}" if m.since else "not clear at the end")
                         + f", {race_.cfg.input_size}x{race_.cfg.input_size} images"))
    if full:
        drop = max_accuracy_drop(h)
        out.append(Claim("training", f"held-out accuracy never falls more than {MAX_DROP:g} points between two "
                         f"evaluations ({preset} race)", seed, MAX_DROP - drop, "points", f"largest fall {drop:.1f}"))
    return out


# --- the race as a shared run (resviz.runs): one per settings, watched by every student who started it ------------

@dataclass(frozen=True)
class RaceHeader:
    """A shared race's first record: what every watcher needs before the steps (its own empty history to fold into)."""
    empty: RaceHistory  # never changed: ``fold`` copies it
    notes: tuple[str, ...]
    accuracy_note: str
    chance: float
    context: RaceContext | None
    file_name: str  # the trained ResNet's download name
    weights_now: object = field(compare=False, repr=False)  # () -> TrainedPair: the weights at the latest step
    key: Hashable = field(default_factory=lambda: uuid.uuid4().hex)  # the shared run's key: says what the records are


def race_run(cfg: M.ResNetConfig, train: Dataset, test: Dataset, class_names: list[str], race_cfg: RaceConfig,
             include_shallow_plain: bool = False, notes: list[str] | None = None, data_name: str = "",
             source: DataSource | None = None, key: Hashable | None = None
             ) -> Generator[RaceHeader | dict, None, pair.TrainedPair]:
    """The race as a shared run: builds it (in the run's worker thread), yields a ``RaceHeader``, then one ``race``
    record per step; returns the trained pair. ``header.weights_now()`` reads the weights between two steps;
    ``header.key`` is ``key`` (the run's key), else one of its own."""
    r = new_race(cfg, train, test, class_names, race_cfg, include_shallow_plain, notes, data_name, source)
    lock = threading.Lock()
    final: list[pair.TrainedPair] = []  # once over: the models are freed, their weights stay

    def weights_now() -> pair.TrainedPair:
        with lock:  # never half-way through an optimizer step
            if not final:
                r.trained = None
                return r.trained_pair()
            return final[0]

    yield RaceHeader(r.history, tuple(r.notes), r.accuracy_note(), r.chance, r.context,
                     f"{next(iter(r.models)).lower()}_trained.pt", weights_now,
                     **({} if key is None else {"key": key}))
    r.history = new_history_like(r.history)  # the header's stays empty
    try:
        while True:
            with lock:
                rec = next(r.gen, None)
                if rec is None:
                    break
                r.history.add(rec)
            yield rec
    finally:  # finished or stopped: the header (kept by finished runs and stopped students) must not hold models
        pair_now = weights_now()
        with lock:
            final.append(pair_now)
            r.models.clear()
            r.gen = iter(())
    return final[0]


@dataclass(frozen=True)
class RaceJob:
    """One race as ``resviz.runs`` launches it: its key (every setting that decides its records), how to make it,
    and its cost (steps x networks: the queue's estimates scale with it)."""
    key: Hashable
    make: Callable[[], Generator]
    cost: float


def race_job(cfg: M.ResNetConfig, req: DataRequest, loaded: tuple[Dataset, Dataset, list[str]], used: RaceConfig,
             include_shallow_plain: bool = False, notes: list[str] | None = None) -> RaceJob:
    """The race of ``cfg`` with ``used`` on the images ``req`` loaded; BudgetError when it would not fit the server."""
    train, test, names = loaded
    nets = 3 if include_shallow_plain else 2
    budget.check_model(fit_config(cfg, train, len(names))[0], used.batch_size, "The training race", nets)
    key = ("race", pair.fingerprint(cfg, req.key, used, include_shallow_plain, req.upload or b""))
    return RaceJob(key, lambda: race_run(cfg, train, test, names, used, include_shallow_plain, notes,
                                         req.source.value, req.source, key), cost=used.steps * nets)


def watch_race(job: RaceJob, old: runs.Watch | None = None) -> runs.Watch:
    """A student's watch on ``job``'s shared run (started, or joined), having left ``old``: after attaching, so
    that pressing Start twice on the same settings keeps the same run."""
    watch = runs.attach(job.key, job.make, cost=job.cost)
    if old is not None:
        old.detach()
    return watch


def stop_watching(watch: runs.Watch, trained: pair.TrainedPair | None = None
                  ) -> tuple[runs.Snapshot | None, pair.TrainedPair | None]:
    """Stop for one student: they leave the run (it goes on for the others, or stops if nobody is left). Returns
    the snapshot their curves end with (None before the first step) and the pair they hold now: the weights
    learned so far if the race had not finished (a step or two further on than the curves), else ``trained``."""
    snap = watch.snapshot()
    if len(snap.records) <= 1:
        snap = None
    elif snap.status.state is not runs.State.FINISHED:
        trained = snap.records[0].weights_now()
    watch.detach()
    return snap, trained


def waiting_message(snap: runs.Snapshot | None, max_running: int) -> tuple[Tone, str] | None:
    """What a student reads instead of the charts (before Start, in the queue, after a failure, while the networks
    are built); None once there is a step to draw."""
    if snap is None:
        return Tone.INFO, ("Choose the networks and settings, then press **Start**. Charts update live; **Stop** "
                           "keeps what was learned so far.")
    s = snap.status
    if s.state is runs.State.QUEUED:
        return Tone.INFO, queue_text(s.position, s.wait_s, max_running)
    if s.state is runs.State.FAILED:
        return Tone.ERROR, f"The race failed: {s.error}"
    return (Tone.INFO, "Building the networks…") if not snap.records else None


@dataclass
class RaceView:
    """One student's view of a shared race: the header and their own history, folded from the shared records."""
    header: RaceHeader
    history: RaceHistory
    seen: int = 1  # records folded, the header included

    def messages(self, live: bool = False) -> list[tuple[Tone, str]]:
        """What the race showed, in words (``race_messages``; ``live``: divergences only)."""
        return race_messages(self.history, self.header.context, live)

    @property
    def figure_key(self) -> tuple:
        """What its charts show: the same for every student at this step of this race (a shared figure cache's key)."""
        return ("race figures", self.header.key, self.history.step)


FRAMES = 60  # a live race is drawn in at most this many frames (one every few steps)


def framed(records, live: bool):
    """The records up to the last whole frame of a live race (all of them otherwise): the students watching one
    race poll at different moments, and a frame they share is one set of charts built for the class (by step,
    thirty watchers each saw a step of their own and the server built thirty sets a second)."""
    if not live or len(records) < 2:
        return records
    every = max(1, records[0].empty.steps // FRAMES)
    return records[:max(2, 1 + (len(records) - 1) // every * every)]


def fold(view: RaceView | None, records) -> RaceView | None:
    """``view`` with the records it has not seen added (a new view from the header if None; None before it)."""
    if view is None:
        if not records:
            return None
        header = records[0]
        view = RaceView(header, new_history_like(header.empty))
    for rec in records[view.seen:]:
        view.history.add(rec)
    view.seen = max(view.seen, len(records))
    return view


def new_history_like(h: RaceHistory) -> RaceHistory:
    """An empty history with ``h``'s networks, plan, classes and held-out images."""
    return RaceHistory({n: RunHistory(r.name, r.role, list(r.layers)) for n, r in h.runs.items()}, h.steps,
                       classes=h.classes, held_out=h.held_out)


def queue_text(position: int, wait_s: float | None, max_running: int) -> str:
    """What a student whose race waits in the server's queue reads."""
    wait = f"; it should start in about {wait_s:.0f} s (from the pace of the races before it)" if wait_s else ""
    return (f"Number {position} in the queue: this server trains {max_running} race(s) at once{wait}. Students who "
            "press Start with the same settings share one race.")
