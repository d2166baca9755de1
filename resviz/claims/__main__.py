"""python -m resviz.claims: run the lesson-claims check and print each claim with its measured margin."""
from __future__ import annotations

import argparse
import sys
import time

from pathlib import Path

from resviz.claims import SEEDS, claims_by_lesson, format_table, to_json


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the sizes the pages use (slow)")
    ap.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    ap.add_argument("--only", nargs="*", help="lesson names")
    ap.add_argument("--json", type=Path, help="also write the claims to this file, as JSON")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    by_lesson = claims_by_lesson(args.seeds, args.full, args.only)
    if args.json:
        args.json.write_text(to_json(by_lesson))
    claims = [c for found in by_lesson.values() for c in found]
    print(format_table(claims))
    failed = sum(not c.holds for c in claims)
    print(f"{len(claims) - failed} passed, {failed} failed  ({time.perf_counter() - t0:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
