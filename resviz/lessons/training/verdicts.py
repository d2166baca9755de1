"""What a race showed, in words that never go beyond its chart: divergences, networks at guessing level, and each
ordering at the end compared with He et al. (2016); a surprise is explained by what differs from the recipe."""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from resviz import pair
from resviz.lessons.training.history import RaceHistory, Role, RunHistory
from resviz.lessons.training.loop import RaceConfig
from resviz.lessons.training.orderings import GAP_MARGIN, Margin, Ordering, race_margins
from resviz.lessons.training.recipes import CHECKED_SEEDS


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


def watch_for(history: RaceHistory) -> str:
    """What to watch for while the race runs, as the paper puts it: the sentence above the live charts."""
    resnet, plain, shallow = (history.by_role(role) for role in (Role.RESNET, Role.PLAIN, Role.SHALLOW))
    if shallow is not None:
        return (f"Watch: does {plain.name}'s loss stay above {shallow.name}'s (the degradation problem, He et al. "
                f"2016, Fig. 1), and {resnet.name}'s fall below {plain.name}'s (Fig. 6)? Each ordering is marked on "
                "the loss chart when it becomes clear.")
    return (f"Watch: does {resnet.name}'s loss fall below {plain.name}'s and stay there (He et al. 2016, Fig. 4 and "
            "6)? The loss chart marks the step where the gap becomes clear.")


def measured_sentence(history: RaceHistory) -> str:
    """The race's outcome in one measured sentence, short (the class's panel shows 80 characters of it beside the
    prediction): every network's smoothed training loss at its last step, lowest first."""
    ends = sorted((r.smoothed_loss[-1], r.name) for r in history.runs.values() if r.loss and not r.message)
    stopped = [r.name for r in history.runs.values() if r.message]
    return (f"{history.step} steps, smoothed loss: " + " < ".join(f"{name} {v:.2f}" for v, name in ends)
            + (f" ({', '.join(stopped)} diverged)" if stopped else "") + ".")
