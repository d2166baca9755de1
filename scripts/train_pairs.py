"""Train the pairs shipped in assets/pairs/: ResNet-20 and ResNet-56, each with its plain twin.

    nice -n 5 python scripts/train_pairs.py resnet20 resnet56 --log train_pairs.log    # writes assets/pairs/
    python scripts/train_pairs.py resnet56 --steps 300 --eval-every 50 --out /tmp/try  # a first look

Each pair is ``resviz.builtin_pair.train`` with the recipe in ``builtin_pair.SHIPPED`` (the ResNet and its twin
from the same initial weights, on the same batches of built-in images), on a fixed number of torch threads.
The state dicts are saved in half precision; a JSON manifest per pair records the recipe, seed, steps, training
time, sha256 of each file, and both networks' accuracy on fresh built-in images (another seed than training's),
measured on the saved files as ``builtin_pair.shipped`` loads them.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from resviz import builtin_pair, pair  # noqa: E402

EVAL_IMAGES = 2000  # fresh images the manifest's accuracies are measured on: +-0.9 points at 80% (one s.e.)


def half_bytes(sd: dict[str, torch.Tensor]) -> bytes:
    """``torch.save`` of ``sd`` with floating tensors in half precision (half the bytes; accuracy re-measured)."""
    buf = io.BytesIO()
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, buf)
    return buf.getvalue()


def log_step(rec: dict, out, every: int) -> None:
    step = rec["step"]
    if step % every and step != rec["steps"] and not any(r["test_acc"] is not None for r in rec["runs"].values()):
        return
    parts = [f"{name} loss {r['loss']:.3f}" + (f" held-out {r['test_acc']:.1%}" if r["test_acc"] is not None else "")
             for name, r in rec["runs"].items() if r["loss"] is not None]
    print(f"step {step}/{rec['steps']} {rec['elapsed_s']:.0f} s ({rec['steps_per_s']:.2f}/s): " + "; ".join(parts),
          file=out, flush=True)


def accuracy_with_noise(acc: float, n: int) -> dict:
    return {"accuracy": round(acc, 4), "standard_error": round(math.sqrt(acc * (1 - acc) / n), 4)}


def train_one(preset: str, r: builtin_pair.BuiltinRecipe, folder: Path, eval_every: int, out) -> dict:
    """Train, save and measure one pair; returns its manifest (also written to ``folder``)."""
    print(f"{preset}: {r.label}, {r.n_train} training images, {torch.get_num_threads()} thread(s)", file=out,
          flush=True)
    start, cpu = time.perf_counter(), time.process_time()
    trained = builtin_pair.train(r, store=False, eval_every=eval_every, on_step=lambda rec: log_step(rec, out, 50))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    folder.mkdir(parents=True, exist_ok=True)
    files, halves = [], []
    for role, sd in (("resnet", trained.state_dict), ("plain", trained.plain_state_dict)):
        blob = half_bytes(sd)
        halves.append(torch.load(io.BytesIO(blob), weights_only=True))
        name = f"{preset}-{role}.pt"
        (folder / name).write_bytes(blob)
        files.append({"role": role, "name": name, "sha256": builtin_pair.sha256(blob), "bytes": len(blob)})
    c = r.race_config()
    manifest = {
        "preset": preset, "seed": r.seed, "steps": r.steps, "label": r.label, "class_names": list(trained.class_names),
        "recipe": {"optimizer": builtin_pair.OPTIMIZER_NAMES[r.optimizer], "lr": c.lr, "batch_size": c.batch_size,
                   **({"momentum": c.momentum} if r.optimizer == "sgd" else {"betas": [0.9, 0.999]}),
                   "weight_decay": c.weight_decay, "warmup_steps": c.warmup_steps, "warmup_factor": c.warmup_factor,
                   "decay_at": list(c.decay_at), "n_train": r.n_train, "image_size": r.cfg.input_size,
                   "bn_refresh": c.bn_refresh, **({"bn_bias": r.bn_bias} if r.bn_bias else {})},
        "files": files,
    }
    builtin_pair.manifest_path(preset, folder).write_text(json.dumps(manifest, indent=1) + "\n")
    # the saved half-precision values, as builtin_pair.shipped reads them (we just wrote them: no sandbox needed)
    resnet, plain = pair.build_pair(replace(trained, state_dict=halves[0], plain_state_dict=halves[1]))
    x, y = pair.eval_data(trained.cfg, EVAL_IMAGES)
    manifest.update(
        accuracies={"images": EVAL_IMAGES, "eval_seed": pair.EVAL_SEED, "chance": 1 / trained.cfg.num_classes,
                    "resnet": accuracy_with_noise(pair.accuracy(resnet, x, y), EVAL_IMAGES),
                    "plain": accuracy_with_noise(pair.accuracy(plain, x, y), EVAL_IMAGES)},
        training={"seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "torch_threads": torch.get_num_threads(),
                  "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "torch": torch.__version__})
    builtin_pair.manifest_path(preset, folder).write_text(json.dumps(manifest, indent=1) + "\n")
    a = manifest["accuracies"]
    print(f"{preset}: done in {seconds:.0f} s; on {EVAL_IMAGES} fresh images ResNet {a['resnet']['accuracy']:.1%}, "
          f"plain twin {a['plain']['accuracy']:.1%} (chance {a['chance']:.0%}); files "
          f"{sum(f['bytes'] for f in files) / 1e6:.2f} MB", file=out, flush=True)
    return manifest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="+", choices=sorted(builtin_pair.SHIPPED))
    ap.add_argument("--steps", type=int, help="override the recipe's steps (a first look; the schedule scales)")
    ap.add_argument("--lr", type=float, help="override the recipe's learning rate (a first look)")
    ap.add_argument("--optimizer", choices=sorted(builtin_pair.OPTIMIZER_NAMES), help="override the recipe's")
    ap.add_argument("--batch-size", type=int, help="override the recipe's batch (a first look)")
    ap.add_argument("--bn-bias", type=float, help="override the recipe's batch-norm bias at initialisation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (fixed, so timings compare)")
    ap.add_argument("--eval-every", type=int, default=250, help="held-out accuracy in the log every this many steps")
    ap.add_argument("--out", type=Path, default=builtin_pair.SHIPPED_DIR)
    ap.add_argument("--log", type=Path, help="append progress here instead of printing it")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.log.open("a") if args.log else sys.stdout
    for preset in args.presets:
        r = replace(builtin_pair.SHIPPED[preset], seed=args.seed)
        if args.lr:
            r = replace(r, lr=args.lr)
        if args.optimizer:
            r = replace(r, optimizer=args.optimizer)
        if args.batch_size:
            r = replace(r, batch_size=args.batch_size)
        if args.bn_bias is not None:
            r = replace(r, bn_bias=args.bn_bias)
        if args.steps:
            r = replace(r, steps=args.steps, warmup_steps=min(r.warmup_steps, args.steps // 10))
        train_one(preset, r, args.out, args.eval_every, out)


if __name__ == "__main__":
    main()
