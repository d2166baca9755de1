"""A trained ResNet and its trained plain twin, for the pages that study trained networks (lesion study,
paths, loss landscape).

``train_pair`` trains both on the built-in dataset with the training race (same batches, same initial
weights) and stores the weights in the disk cache, keyed by (config, seed, steps), so a later visit or
another student reuses them. ``eval_data`` draws fresh built-in images the pair never saw.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from resviz.inputs import data
from resviz import diskcache
from resviz.lessons import training
from resviz import models as M

N_TRAIN = 2000  # built-in training images: enough to learn the shapes in a few hundred steps
EVAL_SEED = 1000  # evaluation images come from another seed: never seen in training


@dataclass(frozen=True, eq=False)
class TrainedPair:
    """A trained ResNet and its trained plain twin, as one page hands them to another (CPU state dicts)."""
    cfg: M.ResNetConfig  # the ResNet's config (residual=True); the twin's is models.plain_config(cfg)
    state_dict: dict
    plain_state_dict: dict
    label: str  # what the pages say about it: "ResNet-20 trained 300 steps on Built-in shapes"
    class_names: tuple[str, ...] = ()  # the classes it was trained on (disc, square, ...)
    data_name: str = ""  # the data it was trained on
    steps: int = 0
    key: str = field(default="")  # a content fingerprint: equal weights share cached results

    def __post_init__(self):
        if not self.key:
            object.__setattr__(self, "key", fingerprint(self.state_dict, self.plain_state_dict, self.label))


def fingerprint(*parts) -> str:
    """A short content hash of state dicts and strings (results are cached for the class: equal inputs share them)."""
    import hashlib

    h = hashlib.sha1()
    for part in parts:
        if isinstance(part, dict):
            for k, v in part.items():
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(str(part).encode())
    return h.hexdigest()[:16]


def pair_key(cfg: M.ResNetConfig, seed: int, steps: int) -> str:
    """The disk-cache key of a trained pair."""
    return f"pair-{cfg.label}-{hash_config(cfg)}-seed{seed}-steps{steps}"


def hash_config(cfg: M.ResNetConfig) -> str:
    import hashlib

    return hashlib.sha1(repr(replace(cfg, residual=True)).encode()).hexdigest()[:10]


def check_pair_config(cfg: M.ResNetConfig) -> None:
    """ConfigError unless the built-in dataset can train ``cfg`` (2-10 classes, 8-256 pixels)."""
    if not 2 <= cfg.num_classes <= len(data.SHAPES):
        raise M.ConfigError(f"The built-in images have 2 to {len(data.SHAPES)} classes; this model has "
                            f"{cfg.num_classes} outputs. Pick a CIFAR preset (10 classes).")
    if cfg.in_channels not in (1, 3) or not 8 <= cfg.input_size <= 64:
        raise M.ConfigError("Training here needs 1 or 3 input channels and an input of 8 to 64 pixels; "
                            "pick a CIFAR preset (32x32).")


def eval_data(cfg: M.ResNetConfig, n: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` fresh built-in images (and labels) at the model's input size."""
    _, test, _ = data.builtin_dataset(num_classes=cfg.num_classes, n_train=1, n_test=n, size=cfg.input_size,
                                      channels=cfg.in_channels, seed=EVAL_SEED)
    return test.tensors[0], test.tensors[1]


def train_pair(cfg: M.ResNetConfig, seed: int = 0, steps: int = 300, device: str = "cpu",
               on_step: Callable[[dict], None] | None = None) -> dict:
    """Train the ResNet of ``cfg`` and its plain twin; store and return their weights and final accuracies."""
    cfg = replace(cfg, residual=True)
    check_pair_config(cfg)
    train, test, _ = data.builtin_dataset(num_classes=cfg.num_classes, n_train=N_TRAIN, n_test=500,
                                          size=cfg.input_size, channels=cfg.in_channels, seed=seed)
    race_models = training.make_race_models(cfg, seed=seed)
    race_cfg = training.RaceConfig(steps=steps, seed=seed, eval_every=0, device=device)
    rec = None
    for rec in training.race(race_models, train, test, race_cfg):
        if on_step:
            on_step(rec)
    resnet, plain = race_models.values()
    diverged = [name for name, r in (rec or {"runs": {}})["runs"].items() if r["diverged"]]
    result = {"state_dict": training.cpu_state_dict(resnet), "plain_state_dict": training.cpu_state_dict(plain),
              "label": f"{cfg.label} and its plain twin, {steps} steps on the built-in images (seed {seed})",
              "diverged": ", ".join(diverged)}
    if diverged:
        result["label"] += f" ({', '.join(diverged)} diverged: its weights are from before the loss became NaN)"
    diskcache.save(pair_key(cfg, seed, steps), result)
    return result


def load_pair(cfg: M.ResNetConfig, seed: int, steps: int) -> dict | None:
    """A pair trained earlier on this machine, or None."""
    return diskcache.load(pair_key(replace(cfg, residual=True), seed, steps))


def build_pair(cfg: M.ResNetConfig, state_dict: dict, plain_state_dict: dict,
               device: str = "cpu") -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ResNet, plain twin) in eval mode with these weights, gradients off."""
    cfg = replace(cfg, residual=True)
    out = []
    for c, sd in ((cfg, state_dict), (M.plain_config(cfg), plain_state_dict)):
        model = M.build_model(c)
        model.load_state_dict(sd)
        model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        out.append(model)
    return out[0], out[1]


def probe_batch(cfg: M.ResNetConfig, n: int = 32, seed: int = EVAL_SEED) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs to probe a model with: fresh built-in images where the model fits them, else seeded noise (no labels)."""
    try:
        check_pair_config(cfg)
    except M.ConfigError:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g), None
    return eval_data(cfg, n)
