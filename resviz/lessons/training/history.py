"""A race's history, as a page keeps it: every network's curves (plain lists), folded from the loop's records, and
the one smoothing the charts and the verdicts read."""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from torch import nn

from resviz.lessons.training.loop import layer_params


SMOOTHING = 0.1  # weight of the newest batch in the smoothed loss (the chart's bold line and the verdicts)


class Role(enum.Enum):
    """What a network is in the race; the charts colour by role, the verdicts compare roles."""
    RESNET = "ResNet"
    PLAIN = "plain twin"
    SHALLOW = "shallower plain net"


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


def new_history_like(h: RaceHistory) -> RaceHistory:
    """An empty history with ``h``'s networks, plan, classes and held-out images."""
    return RaceHistory({n: RunHistory(r.name, r.role, list(r.layers)) for n, r in h.runs.items()}, h.steps,
                       classes=h.classes, held_out=h.held_out)
