"""The default races, as the page runs them: for the benchmarks and the lesson-claims check (``claims``)."""
from __future__ import annotations

import math
from dataclasses import replace

from resviz import models as M
from resviz.lessons.training.history import RaceHistory
from resviz.lessons.training.orderings import GAP_MARGIN, Ordering, race_margins
from resviz.lessons.training.recipes import recipe_for
from resviz.lessons.training.runner import Race, new_race
from resviz.lessons.training.sources import RACE_IMAGE_SIZE, DataRequest, DataSource


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
