"""A race as a page or a benchmark holds it: the models, the live generator and its typed history, built for the
data (``new_race``); what it hands the other pages once trained."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

from torch import nn
from torch.utils.data import Dataset

from resviz import models as M
from resviz import pair
from resviz.lessons.training.history import RaceHistory, new_history
from resviz.lessons.training.loop import RaceConfig, cpu_state_dict, make_race_models, race
from resviz.lessons.training.recipes import recipe_for
from resviz.lessons.training.sources import DataSource, fit_config
from resviz.lessons.training.verdicts import RaceContext, Tone, race_messages


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
