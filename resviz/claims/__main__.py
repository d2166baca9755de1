"""python -m resviz.claims: run the lesson-claims check and print each claim with its measured margin."""
from __future__ import annotations

import argparse
import sys
import time

from resviz.claims import SEEDS, all_claims, format_table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the sizes the pages use (slow)")
    ap.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    ap.add_argument("--only", nargs="*", help="lesson names")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    claims = all_claims(args.seeds, args.full, args.only)
    print(format_table(claims))
    failed = sum(not c.holds for c in claims)
    print(f"{len(claims) - failed} passed, {failed} failed  ({time.perf_counter() - t0:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
