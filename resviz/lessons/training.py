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
import time
from dataclasses import dataclass, field, replace
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from resviz import models as M
from resviz import pair
from resviz.inputs import data

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


@dataclass(frozen=True)
class DataRequest:
    """The images a race asks for; hashable, so a shared cache can key on it (the zip's bytes excepted)."""
    source: DataSource = DataSource.BUILTIN
    size: int = 32
    channels: int = 3
    download: bool = False  # torchvision sets only: fetch them if missing
    folder: str = ""  # the teacher's folder, by name
    upload: bytes | None = field(default=None, compare=False, repr=False)  # the student's zip

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


@dataclass
class RaceConfig:
    """Settings shared by every network in a race."""

    lr: float = 0.05  # the paper's 0.1 was for batches of 128; at 32, 0.05 learns the built-in shapes fastest
    batch_size: int = 32  # small batches: more steps per second on a 2-core CPU, so the gap shows sooner
    steps: int = 300  # ~40 s for ResNet-20 and its twin on a 2-core CPU; the gap shows near step 180
    momentum: float = 0.9  # the paper's SGD momentum
    weight_decay: float = 1e-4  # the paper's weight decay
    seed: int = 0  # fixes the batch order (the models' initial weights are fixed by make_race_models)
    eval_every: int = 25  # test accuracy every this many steps (and at the last); 0 = never
    eval_size: int = 500  # test images per evaluation: enough for +-2% accuracy, cheap on a CPU
    device: str = "cpu"


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


def new_history(race_models: dict[str, nn.Module], steps: int, roles: tuple[Role, ...] = ROLES_IN_ORDER
                ) -> RaceHistory:
    """An empty history for these models (roles in ``make_race_models`` order unless given)."""
    runs = {name: RunHistory(name, role, layer_params(m)[0]) for (name, m), role in zip(race_models.items(), roles)}
    return RaceHistory(runs, steps)


def pulls_ahead(history: RaceHistory, leader: str, other: str, margin: float = 0.1, hold: int = 10) -> int | None:
    """First step from which ``leader``'s smoothed loss stays ``margin`` below ``other``'s for ``hold`` steps."""
    a, b = history.runs[leader], history.runs[other]
    n = min(len(a.loss), len(b.loss))
    la, lb = smooth(a.loss[:n]), smooth(b.loss[:n])
    ahead = [x is not None and (y is None or y - x >= margin) for x, y in zip(la, lb)]
    for i in range(n - hold + 1):
        if all(ahead[i:i + hold]):
            return a.step[i]
    return None


def race_messages(history: RaceHistory) -> list[tuple[str, str]]:
    """What the race showed, in words: ``("warning", divergence)`` and ``("success", who pulled ahead, when)``."""
    out = [("warning", r.message) for r in history.runs.values() if r.message]
    resnet, plain, shallow = (history.by_role(role) for role in ROLES_IN_ORDER)
    pairs = [(resnet, plain)] + ([(shallow, plain)] if shallow else [])
    for lead, other in pairs:
        step = pulls_ahead(history, lead.name, other.name)
        if step:
            out.append(("success", f"{lead.name}'s smoothed loss went clearly below {other.name}'s (by 0.1, held for "
                                   f"10 steps) from step {step}, {history.elapsed[step - 1]:.0f} s into the race."))
    return out


def status_line(history: RaceHistory, running: bool) -> str:
    """Steps per second and each live network's latest batch loss, for the line above the charts."""
    losses = [f"{r.name}: loss {r.loss[-1]:.3f}" for r in history.runs.values() if r.loss and not r.message]
    return " · ".join([f"**{history.steps_per_s:.1f} steps/s**", *losses] + (["*running…*"] if running else []))


# --- a race as a page holds it -----------------------------------------------------------------------------


def data_shape_for(cfg: M.ResNetConfig) -> tuple[int, int]:
    """(size, channels) to draw built-in images at for ``cfg``: its own where cheap, else 32x32 RGB."""
    size = cfg.input_size if 16 <= cfg.input_size <= 64 else 32
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
             include_shallow_plain: bool = False, notes: list[str] | None = None, data_name: str = "") -> Race:
    """A race ready to run: the config fitted to the data, the models, the generator and an empty history."""
    cfg, fit_notes = fit_config(cfg, train, len(class_names))
    race_models = make_race_models(cfg, seed=race_cfg.seed, include_shallow_plain=include_shallow_plain,
                                   device=race_cfg.device)
    return Race(cfg=cfg, models=race_models, history=new_history(race_models, race_cfg.steps),
                gen=race(race_models, train, test, race_cfg), class_names=tuple(class_names), data_name=data_name,
                notes=[*(notes or []), *fit_notes])
