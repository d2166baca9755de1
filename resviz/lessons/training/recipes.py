"""The recommended recipes: the settings the sweep (scripts/sweep_race.py) chose for each swept network, and the
learning rates a student may pick."""
from __future__ import annotations

from dataclasses import dataclass, replace

from resviz import models as M
from resviz.lessons.training.loop import RaceConfig
from resviz.lessons.training.sources import RACE_IMAGE_SIZE


CHECKED_SEEDS = (0, 1, 2, 3, 4)  # the seeds the recipes were swept and the claims are checked on


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

    def changed(self, used: RaceConfig) -> bool:
        """Whether ``used`` trains with another rate, batch or weight decay than this recipe."""
        c = self.config
        return (used.lr, used.batch_size, used.weight_decay) != (c.lr, c.batch_size, c.weight_decay)

    def in_use(self, used: RaceConfig) -> str:
        """The settings a race runs with, for the page, and whether they differ from this recipe's."""
        return (f"Recipe: learning rate {used.lr:g} at batch {used.batch_size}, weight decay {used.weight_decay:g}, "
                f"seed {used.seed}" + (" (**changed** from the recommended)" if self.changed(used) else ""))


def recipe_for(cfg: M.ResNetConfig) -> Recipe:
    """The recommended recipe for racing ``cfg``: ResNet-56's for nets of 44 layers or more, else ResNet-20's."""
    name = "resnet56" if cfg.depth >= 44 else "resnet20"
    same = dict(residual=True, input_size=32, in_channels=3, num_classes=10, name="")
    exact = replace(cfg, **same) == replace(M.get_config(name), **same)
    return Recipe(RECIPES[name], name, exact)
