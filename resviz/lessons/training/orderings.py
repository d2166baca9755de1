"""The orderings of He et al. (2016) a race can show, and by how much each stands: the margins the verdicts, the
charts, the claims and the benchmark read."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from resviz.lessons.training.history import RaceHistory, Role


GAP_MARGIN = 0.1  # "clearly below": a smoothed training loss lower by at least this much (nats)


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



MARK_TEXTS = {  # an ordering as the loss chart marks it, at the step it became clear (``ordering_marks``): short,
    Ordering.SHORTCUTS_HELP: "{lower} below {higher}",  # the chart is half a projector wide
    Ordering.DEGRADATION: "degradation: {higher} above {lower}",
    Ordering.NO_DEGRADATION: "{lower} at or below {higher}",
}


@dataclass(frozen=True)
class Mark:
    """One ordering on the loss chart: the step from which it has held by its margin, and its words."""
    ordering: Ordering
    step: int
    text: str  # on the chart
    detail: str  # on hover: with the margin


def ordering_marks(history: RaceHistory) -> list[Mark]:
    """Every ordering that shows so far (live or finished: ``race_margins`` of the curves up to now), where it
    became clear, in the order the orderings appeared; none for a network that diverged (its curve stopped)."""
    marks = []
    for ordering, m in race_margins(history).items():
        lower, higher = (history.by_role(role) for role in ordering.value)
        if m.shows and not lower.message and not higher.message:
            text = MARK_TEXTS[ordering].format(lower=lower.name, higher=higher.name)
            by = f" by at least {ordering.required:g}" if ordering.required else ""
            marks.append(Mark(ordering, m.since, text, f"{text}{by} in smoothed training loss from step {m.since} "
                                                       f"to step {m.last_step}"))
    return sorted(marks, key=lambda mark: mark.step)
