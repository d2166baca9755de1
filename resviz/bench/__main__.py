"""Run every benchmark module in resviz.bench and print one table; also write it as JSON.

    python -m resviz.bench [--only NAME ...] [--json bench.json]
"""
import argparse
import importlib
import json
import pkgutil
import platform
import sys
import traceback

import torch

import resviz.bench as pkg


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, {gpu}, torch {torch.__version__}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", help="module names to run (default: all)")
    ap.add_argument("--json", default="bench.json", help="where to write the table as JSON")
    args = ap.parse_args(argv)
    rows = []
    for mod in sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)):
        if mod.startswith("_") or (args.only and mod not in args.only):
            continue
        print(f"running {mod}…", file=sys.stderr, flush=True)
        try:
            rows += [dict(module=mod, **r) for r in importlib.import_module(f"resviz.bench.{mod}").run()]
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            traceback.print_exc()
            rows.append(dict(module=mod, figure=f"{mod} FAILED", baseline="", value=float("nan"), unit="",
                             target="", ok=False))
    print(f"\nMachine: {machine()}\n")
    print("| figure | baseline | value | target | ok |\n|---|---|---|---|---|")
    for r in rows:
        ok = {True: "yes", False: "NO", None: "report"}[r["ok"]]
        print(f"| {r['figure']} | {r['baseline']} | {r['value']:.3g} {r['unit']} | {r['target']} | {ok} |")
    with open(args.json, "w") as f:
        json.dump({"machine": machine(), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
