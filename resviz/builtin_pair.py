"""The built-in trained pair: a CIFAR preset and its plain twin, trained here by the training race (same initial
weights, same batches, the race's 16x16 built-in images, batch norm re-estimated at the end as the race does before
it evaluates), and kept in the disk cache so that a later visit, another student or another server process reuses it.

Not the race's own recipe (lr 0.01 at batch 128 for 300 steps, chosen to show the race's ordering early): after it
ResNet-20 gets 46% and its twin 36% of fresh images right (seed 0; 50% and 46% after 600 steps), too little to study
what a trained net does. SGD at lr 0.05, batch 32, for 600 steps gives 70-75% and 21-44% (seeds 0-2), and the lesion
and paths lessons show the paper's picture on those seeds. Both networks always get the same recipe.

Shipped pairs (``shipped``): trained once by scripts/train_pairs.py with ``SHIPPED``'s longer recipes and kept in
assets/pairs/ (half-precision state dicts, a manifest with the recipe, seed, time, accuracies and each file's sha256),
so a page starts from a trained pair at once and every student sees the same one. ResNet-20's: 97.4% and its twin
96.7% of 2000 fresh images (1200 SGD steps). ResNet-56's: 83.0% and its twin 49.1% (450 Adam steps, batch-norm
biases 1 at the start; 32 min on 1 thread of the shared CPU, 6 min of CPU). SGD did not train plain-56 here: after
900 steps at lr 0.01 ResNet-56 got 94.4% and plain-56 12.0% (training loss 2.30, guessing's), and the paper's warm-up
recipe (0.01, then 0.1) lost the ResNet too. At initialisation plain-56's first conv gets a gradient 158 times its
own weight norm (its last conv 0.02; ResNet-56's first 1.2): batch norm's gradient explosion in deep plain nets
(Yang et al., ICLR 2019), and an image's output is set by its batch-mates (``SHIPPED``'s comment). With biases of 1
in every batch norm, for both networks, that gradient is 0.12 times the norm and the batch-mates' effect 60%, not 93%.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from resviz import disk_cache, pair
from resviz import models as M
from resviz.inputs import data, weights
from resviz.lessons import training

PRESETS = ("resnet20", "resnet32", "resnet44", "resnet56")  # small enough to train on a laptop CPU
STEPS = (300, 600, 1200)
N_TRAIN = 2000  # built-in training images, drawn from the recipe's seed
VERSION = 2  # part of the disk-cache key: raise it when training changes in a way the recipe does not show
OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam"}  # as labels and manifests write them


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
    warmup_steps: int = 0  # steps at 0.1x the rate first (the paper's warm-up for ResNet-110, section 4.2)
    decay_at: tuple[float, ...] = ()  # fractions of the run after which the rate is divided by 10 (paper: 0.5, 0.75)
    n_train: int = N_TRAIN  # built-in training images: a longer schedule needs more of them, or it learns them by heart
    optimizer: str = "sgd"  # the race's SGD, or "adam" (default betas; ``training.make_optimizer``) for both networks
    bn_bias: float = 0.0  # every batch norm's bias (beta) at initialisation, in both networks (``init_bn_bias``)

    def race_config(self, device: str = "cpu", eval_every: int = 0) -> training.RaceConfig:
        overrides = {k: v for k, v in (("lr", self.lr), ("batch_size", self.batch_size)) if v is not None}
        return replace(training.recipe_for(self.cfg).config, steps=self.steps, seed=self.seed, eval_every=eval_every,
                       warmup_steps=self.warmup_steps, decay_at=self.decay_at, device=device, **overrides)

    @property
    def key(self) -> str:
        """The disk-cache key: changes with the network, the length, the seed and the race's recipe."""
        recipe = self.race_config()
        parts = (repr(self.cfg), repr(recipe), self.n_train, VERSION) + (
            (self.optimizer, self.bn_bias) if (self.optimizer, self.bn_bias) != ("sgd", 0) else ())  # keys as before
        return f"pair-{self.cfg.label}-{pair.fingerprint(*parts)}"

    @property
    def label(self) -> str:
        size, c = self.cfg.input_size, self.race_config()
        schedule = (f", {c.warmup_steps} warm-up" if c.warmup_steps else "") + (
            f", /10 after {' and '.join(f'{f:.0%}' for f in c.decay_at)}" if c.decay_at else "") + (
            f", batch-norm biases {self.bn_bias:g} at start" if self.bn_bias else "")
        return (f"{self.cfg.label} and its plain twin, {self.steps} {OPTIMIZER_NAMES[self.optimizer]} steps "
                f"(lr {c.lr:g}, batch {c.batch_size}{schedule}) on the built-in images ({size}x{size}, "
                f"seed {self.seed})")


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


@torch.no_grad()
def init_bn_bias(model: torch.nn.Module, bias: float) -> None:
    """Set every batch norm's bias to ``bias`` (0 leaves torchvision's initialisation as it is). A positive bias keeps
    most ReLUs open at the start: the net is nearer a linear one, which tames batch norm's gradient explosion in deep
    plain nets (Yang et al. 2019, abstract). Applied to the ResNet and its twin alike: they still start equal."""
    if bias:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.fill_(bias)


def train(r: BuiltinRecipe, device: str = "cpu", on_step: Callable[[dict], None] | None = None,
          store: bool = True, eval_every: int = 0) -> pair.TrainedPair:
    """Train the pair of recipe ``r`` (the race's per-step records go to ``on_step``, with held-out accuracy on
    500 images drawn beside the training set every ``eval_every`` steps); keep it on disk if ``store``."""
    pair.check_pair_config(r.cfg)
    train_set, test_set, names = data.builtin_dataset(num_classes=r.cfg.num_classes, n_train=r.n_train,
                                                      n_test=500 if eval_every else 1, size=r.cfg.input_size,
                                                      channels=r.cfg.in_channels, seed=r.seed)
    race_models = training.make_race_models(r.cfg, seed=r.seed)
    for model in race_models.values():
        init_bn_bias(model, r.bn_bias)
    race_cfg, rec = r.race_config(device, eval_every), None
    for rec in training.race(race_models, train_set, test_set, race_cfg, optimizer=r.optimizer):
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


# --- the pairs shipped in the repository (trained by scripts/train_pairs.py) ---------------------------------
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "assets" / "pairs"
SHIPPED = {  # what scripts/train_pairs.py trains: the paper's kind of recipe (SGD, momentum 0.9, weight decay 1e-4,
    #          lr / 10 late in the run), longer than a page's built-in pair, on 10x its images; results in the manifests
    "resnet20": BuiltinRecipe(steps=1200, lr=0.05, batch_size=128, warmup_steps=60, decay_at=(0.5, 0.75),
                              n_train=20_000),
    # ResNet-56: Adam, and every batch-norm bias 1 at the start in both networks (``init_bn_bias``). Why (seed 0,
    # 500 held-out images, 1 thread on the shared CPU): SGD left plain-56 at guessing (module docstring), and so did,
    # within the steps the probes had, Adam at 1e-3 (batch 128: loss 2.304 at step 125; batch 32: 10.6% at step 250,
    # the ResNet 35.2%), Adam at 1e-4 (10.6% at step 250), SGD 0.05 with the gradient norm clipped at 1 (loss 2.33 at
    # step 75) and biases of 1 or 2 in each block's first batch norm only (2.31 at step 175). At initialisation an
    # image's output from plain-56 is set by its batch-mates: drawing the other 96 images of a batch of 128 afresh
    # moves its pooled last features by 93% of their size (ResNet-56: 37%, plain-20: 59%; batch 512: 119%, 20%, 22%).
    # Plain-56 learns one fixed batch of 64 at once (Adam 1e-3: loss 0.75 after 100 steps) but not 128 fixed images
    # in random batches of 32 (2.2 after 160). Biases of 1 keep most ReLUs open, the net nearer a linear one (Yang et
    # al. 2019, abstract): the batch-mates then move plain-56's features by 60% (biases 2: 7.5%), and at step 225
    # ResNet-56 had 52.8% right, plain-56 33.4%. With biases 2 plain-56 had 31.2%, but the ResNet 11.8% (its
    # summed shortcut path grows with the biases: loss 14.7 at step 25). The shipped run: assets/pairs/resnet56.json
    "resnet56": BuiltinRecipe(on_race_images(M.get_config("resnet56")), steps=450, lr=0.001, batch_size=128,
                              warmup_steps=20, decay_at=(0.75,), n_train=20_000, optimizer="adam", bn_bias=1.0),
}


def manifest_path(preset: str, folder: Path = SHIPPED_DIR) -> Path:
    return folder / f"{preset}.json"


def recipe_from_manifest(m: dict) -> BuiltinRecipe:
    """The recipe a manifest records (the files were trained with it)."""
    r = m["recipe"]
    return BuiltinRecipe(on_race_images(M.get_config(m["preset"])), steps=m["steps"], seed=m["seed"], lr=r["lr"],
                         batch_size=r["batch_size"], warmup_steps=r["warmup_steps"],
                         decay_at=tuple(r["decay_at"]), n_train=r["n_train"],
                         optimizer=r.get("optimizer", "SGD").lower(), bn_bias=r.get("bn_bias", 0.0))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_shipped_file(path: Path, expected_sha256: str) -> bytes:
    """The bytes of a shipped file, once they match the manifest's hash; WeightsError in plain words otherwise."""
    try:
        blob = path.read_bytes()
    except OSError:
        raise weights.WeightsError(f"The shipped weights {path.name} are missing; restore assets/pairs from the "
                                   "repository or run scripts/train_pairs.py.") from None
    if sha256(blob) != expected_sha256:
        raise weights.WeightsError(f"The shipped weights {path.name} do not match their manifest (sha256): the file "
                                   "was changed or damaged, so it was not loaded. Restore assets/pairs from the "
                                   "repository or run scripts/train_pairs.py.")
    return blob


def shipped(preset: str, folder: Path = SHIPPED_DIR) -> pair.TrainedPair | None:
    """The trained pair of ``preset`` shipped in ``folder``, None if none is shipped. Every file is checked against
    its manifest's sha256 before any is read, then read by the uploads' safe loader (half precision on disk,
    float32 in the pair); a changed, missing or unsafe file is a WeightsError in plain words."""
    path = manifest_path(preset, folder)
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    r = recipe_from_manifest(m)
    blobs = [read_shipped_file(folder / f["name"], f["sha256"]) for f in m["files"]]  # (ResNet, plain twin)
    cfg = M.with_shortcuts(r.cfg)
    resnet, plain = (training.cpu_state_dict(weights.load_state_dict_safely(blob, M.build_model(c)).model)
                     for blob, c in zip(blobs, (cfg, M.plain_config(cfg))))
    return pair.TrainedPair(r.cfg, resnet, plain, f"{r.label}, shipped with resviz",
                            class_names=tuple(m["class_names"]), data_name="the built-in images", steps=r.steps)


def shipped_presets(folder: Path = SHIPPED_DIR) -> list[str]:
    """The presets whose trained pair is shipped, in ``PRESETS`` order."""
    return [p for p in PRESETS if manifest_path(p, folder).is_file()]


@dataclass(frozen=True)
class ShippedInfo:
    """What a shipped pair's manifest says, for the pair picker: how long it trained and how well it does."""
    preset: str
    steps: int
    seconds: float  # training time on ``threads`` torch threads of a shared 2-core CPU
    threads: int
    resnet_accuracy: float  # on ``images`` fresh built-in images
    plain_accuracy: float
    images: int


def shipped_info(preset: str, folder: Path = SHIPPED_DIR) -> ShippedInfo | None:
    """The manifest of ``preset``'s shipped pair, without loading its weights; None if none is shipped."""
    path = manifest_path(preset, folder)
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    a, t = m["accuracies"], m["training"]
    return ShippedInfo(preset, m["steps"], t["seconds"], t["torch_threads"], a["resnet"]["accuracy"],
                       a["plain"]["accuracy"], a["images"])


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


# --- the pairs the deep-pair claims (lesion, landscape) are checked on -------------------------------------
@functools.lru_cache(maxsize=2)
def shipped_pair(preset: str) -> pair.LoadedPair:
    """``preset``'s shipped pair, loaded as the pair picker loads it (once per process)."""
    return pair.load_pair(shipped(preset), pair.PairSource.BUILTIN)


def script_recipe(preset: str, seed: int) -> BuiltinRecipe:
    """What scripts/train_pairs.py trains for ``preset`` from ``seed``."""
    return replace(SHIPPED[preset], seed=seed)


@functools.lru_cache(maxsize=5)
def script_pair(preset: str, seed: int) -> pair.LoadedPair:
    """The pair scripts/train_pairs.py makes for ``preset`` from ``seed``: the shipped one when it is that pair (same
    recipe and seed), else trained here with the same recipe (about 40 min for ResNet-20 on one CPU thread)."""
    path = manifest_path(preset)
    if path.is_file() and recipe_from_manifest(json.loads(path.read_text())).key == script_recipe(preset, seed).key:
        return shipped_pair(preset)
    return pair.load_pair(train(script_recipe(preset, seed), store=False), pair.PairSource.BUILTIN)


CI_CLAIM_PRESETS = ("resnet20",)  # shipped pairs whose deep claims CI checks. On the shipped ResNet-56 pair the
#   landscape claim alone took 660 s (233 s of CPU on 2 threads, shared CPU; it held, margin +0.13): --full only


def ci_claims_presets() -> list[str]:
    """The shipped presets whose pairs the deep-pair claims are checked on at CI size."""
    return [p for p in shipped_presets() if p in CI_CLAIM_PRESETS]


def deep_claims_pairs(seeds: tuple[int, ...], full: bool, ci_size: bool = True):
    """(label, seed, pair) for the deep-pair claims: at CI size the CI pair of each seed (``ci_size``) and each
    shipped pair of ``CI_CLAIM_PRESETS`` (label "shipped <preset> pair"); with ``full`` the pairs
    scripts/train_pairs.py trains from each seed, for every shipped preset. A label of "" is the seed's own pair."""
    if full:
        for preset in shipped_presets():
            for seed in seeds:
                yield f"{preset} pair of scripts/train_pairs.py", seed, script_pair(preset, seed)
        return
    for seed in seeds if ci_size else ():
        yield "", seed, claims_pair(seed, False)
    for preset in ci_claims_presets():
        p = shipped_pair(preset)
        yield f"shipped {preset} pair", json.loads(manifest_path(preset).read_text())["seed"], p
