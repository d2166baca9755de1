"""The lesson-claims check: every lesson's headline claim, measured on several seeds, with its margin.

    python -m resviz.claims              # CI size: small models, few steps, seeds 0-4
    python -m resviz.claims --full       # the sizes the pages use (minutes to an hour on a laptop CPU)
    python -m resviz.claims --only training lesion
    python -m resviz.claims --json claims.json  # also write the claims as JSON (the CI test reads them back)

A lesson module ``resviz/lessons/<name>.py`` takes part by defining ``claims(seeds, full) -> list[Claim]``.
A claim that fails on some seed is a finding to fix in the lesson, not a seed to drop.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass

SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Claim:
    """One sentence a page says, checked on one seed: the measured margin and whether it holds."""
    lesson: str
    text: str  # the claim as the page states it
    seed: int
    margin: float  # measured; > 0 means the claim holds by that much
    unit: str = ""  # what the margin is in ("loss", "accuracy points", "x")
    detail: str = ""  # the numbers behind the margin
    pair: str = ""  # the pair it was measured on when not the seed's own ("shipped resnet20 pair")

    @property
    def holds(self) -> bool:
        return self.margin > 0


def lesson_claims(name: str, seeds=SEEDS, full: bool = False) -> list[Claim]:
    """The claims of one lesson (empty when its module states none)."""
    module = importlib.import_module(f"resviz.lessons.{name}")
    check = getattr(module, "claims", None)
    return list(check(tuple(seeds), full)) if check else []


def claims_by_lesson(seeds=SEEDS, full: bool = False, only=None) -> dict[str, list[Claim]]:
    """Every lesson's claims, by lesson name, in the order of the lessons."""
    from resviz.lessons import LESSONS

    out = {}
    for lesson in LESSONS:
        if only and lesson.name not in only:
            continue
        try:
            out[lesson.name] = lesson_claims(lesson.name, seeds, full)
        except ModuleNotFoundError as e:
            if e.name != f"resviz.lessons.{lesson.name}":
                raise
    return out


def all_claims(seeds=SEEDS, full: bool = False, only=None) -> list[Claim]:
    """Every lesson's claims, in the order of the lessons."""
    return [c for claims in claims_by_lesson(seeds, full, only).values() for c in claims]


def format_table(claims: list[Claim]) -> str:
    """One line per claim and seed: holds or FAILS, the margin, the numbers."""
    lines = []
    for c in claims:
        verdict = "holds" if c.holds else "FAILS"
        on = f" ({c.pair})" if c.pair else ""
        lines.append(f"{verdict:5}  {c.lesson:13} seed {c.seed}{on}  margin {c.margin:+.3g} {c.unit:8}  {c.text}"
                     + (f"  [{c.detail}]" if c.detail else ""))
    return "\n".join(lines)


def to_json(by_lesson: dict[str, list[Claim]]) -> str:
    """``claims_by_lesson``'s answer as JSON (``from_json`` reads it back)."""
    return json.dumps({name: [asdict(c) for c in claims] for name, claims in by_lesson.items()}, indent=1)


def from_json(text: str) -> dict[str, list[Claim]]:
    """Claims by lesson, as ``to_json`` wrote them."""
    return {name: [Claim(**fields) for fields in claims] for name, claims in json.loads(text).items()}
