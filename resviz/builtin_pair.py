"""The built-in trained pair: a CIFAR preset and its plain twin, trained here by the training race (same initial
weights, same batches, the race's 16x16 built-in images, batch norm re-estimated at the end as the race does before
it evaluates), and kept in the disk cache so that a later visit, another student or another server process reuses it.

Not the race's own recipe (lr 0.01 at batch 128 for 300 steps, chosen to show the race's ordering early): after it
ResNet-20 gets 46% and its twin 36% of fresh images right (seed 0; 50% and 46% after 600 steps), too little to study
what a trained net does. SGD at lr 0.05, batch 32, for 600 steps gives 70-75% and 21-44% (seeds 0-2), and the lesion
and paths lessons show the paper's picture on those seeds. Both networks always get the same recipe.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Callable

from resviz import disk_cache, pair
from resviz import models as M
from resviz.inputs import data
from resviz.lessons import training

PRESETS = ("resnet20", "resnet32", "resnet44", "resnet56")  # small enough to train on a laptop CPU
STEPS = (300, 600, 1200)
N_TRAIN = 2000  # built-in training images, drawn from the recipe's seed
VERSION = 2  # part of the disk-cache key: raise it when training changes in a way the recipe does not show


def on_race_images(cfg: M.ResNetConfig) -> M.ResNetConfig:
    """``cfg`` (with shortcuts) taking the images the race trains on: built-in shapes at the race's size."""
    size, channels = training.data_shape_for(cfg, training.DataSource.BUILTIN)
    return replace(M.with_shortcuts(cfg), input_size=size, in_channels=channels)


@dataclass(frozen=True)
class BuiltinRecipe:
    """What a built-in pair is: the network, how long it trains, the seed of its weights and batches."""
    cfg: M.ResNetConfig = field(default_factory=lambda: on_race_images(M.get_config("resnet20")))
    steps: int = 600  # 25 s for ResNet-20 and its twin on 1 torch thread of a quiet 2-core CPU (a background job)
    seed: int = 0
    lr: float | None = 0.05  # None: the race's recipe for this depth (see the module docstring)
    batch_size: int | None = 32

    def race_config(self, device: str = "cpu") -> training.RaceConfig:
        overrides = {k: v for k, v in (("lr", self.lr), ("batch_size", self.batch_size)) if v is not None}
        return replace(training.recipe_for(self.cfg).config, steps=self.steps, seed=self.seed, eval_every=0,
                       device=device, **overrides)

    @property
    def key(self) -> str:
        """The disk-cache key: changes with the network, the length, the seed and the race's recipe."""
        recipe = self.race_config()
        return f"pair-{self.cfg.label}-{pair.fingerprint(repr(self.cfg), repr(recipe), N_TRAIN, VERSION)}"

    @property
    def label(self) -> str:
        size, c = self.cfg.input_size, self.race_config()
        return (f"{self.cfg.label} and its plain twin, {self.steps} SGD steps (lr {c.lr:g}, batch {c.batch_size}) "
                f"on the built-in images ({size}x{size}, seed {self.seed})")


def recipe(preset: str, steps: int, seed: int = 0) -> BuiltinRecipe:
    """The recipe of a preset from ``PRESETS`` trained ``steps`` steps."""
    return BuiltinRecipe(on_race_images(M.get_config(preset)), steps, seed)


def load(r: BuiltinRecipe) -> pair.TrainedPair | None:
    """The pair of recipe ``r`` if it was trained on this machine before, else None."""
    stored = disk_cache.load(r.key)
    if stored is None:
        return None
    return pair.TrainedPair(r.cfg, stored["state_dict"], stored["plain_state_dict"], stored["label"],
                            class_names=tuple(stored["class_names"]), data_name="the built-in images",
                            steps=r.steps)


def ready(recipes) -> list[BuiltinRecipe]:
    """Those of ``recipes`` already trained on this machine."""
    return [r for r in recipes if disk_cache.exists(r.key)]


def train(r: BuiltinRecipe, device: str = "cpu", on_step: Callable[[dict], None] | None = None,
          store: bool = True) -> pair.TrainedPair:
    """Train the pair of recipe ``r`` (the race's per-step records go to ``on_step``); keep it on disk if ``store``."""
    pair.check_pair_config(r.cfg)
    train_set, test_set, names = data.builtin_dataset(num_classes=r.cfg.num_classes, n_train=N_TRAIN, n_test=1,
                                                      size=r.cfg.input_size, channels=r.cfg.in_channels,
                                                      seed=r.seed)
    race_models = training.make_race_models(r.cfg, seed=r.seed)
    race_cfg, rec = r.race_config(device), None
    for rec in training.race(race_models, train_set, test_set, race_cfg):
        if on_step:
            on_step(rec)
    for model in race_models.values():  # as the race does before it evaluates: statistics of these weights
        training.refresh_batch_norm(model, train_set.tensors[0][:race_cfg.bn_refresh])
    diverged = [name for name, run in (rec or {"runs": {}})["runs"].items() if run["diverged"]]
    label = r.label + (f" ({', '.join(diverged)} diverged: weights from before its loss blew up)" if diverged else "")
    resnet, plain = race_models.values()
    stored = {"state_dict": training.cpu_state_dict(resnet), "plain_state_dict": training.cpu_state_dict(plain),
              "label": label, "class_names": tuple(names)}
    if store:
        disk_cache.save(r.key, stored)
    return pair.TrainedPair(r.cfg, stored["state_dict"], stored["plain_state_dict"], label,
                            class_names=tuple(names), data_name="the built-in images", steps=r.steps)


# --- the pair the lesson-claims check studies -------------------------------------------------------------
CLAIMS_CFG = M.ResNetConfig(block="basic", layers=(3, 3, 3), widths=(8, 16, 32), stem="cifar", stem_width=8,
                            input_size=16, num_classes=4, shortcut="A", name="claims-resnet20")  # ResNet-20's shape,
#                                                   a quarter of its width on 16-pixel images: trains in seconds


def claims_recipe(seed: int, full: bool) -> BuiltinRecipe:
    """CI size: a narrow ResNet-20 on 16-pixel images, 4 classes; full: the page's default built-in pair."""
    if full:
        return BuiltinRecipe(seed=seed)
    return BuiltinRecipe(CLAIMS_CFG, steps=1000, seed=seed, lr=0.05, batch_size=32)  # pinned: what was measured


@functools.lru_cache(maxsize=5)
def claims_pair(seed: int, full: bool) -> pair.LoadedPair:
    """The trained pair of ``claims_recipe``, trained once per process (never stored: the check trains afresh)."""
    return pair.load_pair(train(claims_recipe(seed, full), store=False), pair.PairSource.BUILTIN)
