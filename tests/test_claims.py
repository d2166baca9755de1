"""The lesson-claims check at CI size: every lesson's headline claim holds on seeds 0-4 (python -m resviz.claims),
and the deep-pair claims (lesion, loss landscape) hold on each shipped pair too."""
import pytest

from resviz import builtin_pair
from resviz.claims import SEEDS, Claim, format_table
from resviz.lessons import LESSONS

# Lessons whose headline claim issue 12 names, checked at CI size. The loss landscape's claim is checked on the shipped
# pairs (at 20 layers the narrow CI pair fails it on seed 1: resviz/lessons/landscape.py says why).
CHECKED_AT_CI_SIZE = {"training", "signal_flow", "lesion", "paths", "shattered", "landscape"}
ON_SHIPPED_PAIRS = {"lesion", "landscape"}  # issue 23: the deep-pair claims, on builtin_pair.CI_CLAIM_PRESETS


@pytest.mark.claims
@pytest.mark.parametrize("lesson", [lesson.name for lesson in LESSONS])
def test_every_claim_of_the_lesson_holds_on_every_seed(lesson, claims_check):
    """Run last, on the claims of ``python -m resviz.claims`` started in the background at the session's start
    (conftest.py): ``lesson_claims(lesson, SEEDS, full=False)`` in a child process."""
    claims = claims_check(lesson)
    print(format_table(claims))
    failed = [c for c in claims if not c.holds]
    assert not failed, "\n" + format_table(failed)
    assert all(c.lesson == lesson for c in claims)
    if lesson in CHECKED_AT_CI_SIZE:
        assert claims, f"{lesson} states a headline claim: it must check it"
    own = [c for c in claims if not c.pair]
    if own:  # a lesson that states claims on its own pairs checks them on every seed
        assert {c.seed for c in own} == set(SEEDS)
    shipped = {c.pair for c in claims if c.pair}
    assert shipped == ({f"shipped {p} pair" for p in builtin_pair.ci_claims_presets()} if lesson in ON_SHIPPED_PAIRS
                       else set())


def test_a_pair_at_chance_gets_no_claim(monkeypatch):
    """The page makes no claim on a pair that guesses; the check does not count one either (issue 23: no green "as in
    the paper" beside "no better than guessing")."""
    from dataclasses import replace

    from resviz.lessons import landscape, lesion

    real = builtin_pair.shipped_pair("resnet20")
    guessing = replace(real, plain_accuracy=real.chance)  # the pair's own check says the plain twin guesses
    monkeypatch.setattr(builtin_pair, "deep_claims_pairs", lambda seeds, full, ci_size=True: [("shipped", 0, guessing)])
    said = [c for c in lesion.claims((0,), False) + landscape.claims((0,), False)
            if c.text in (lesion.CLAIM, landscape.CLAIM)]
    assert len(said) == 2 and not any(c.holds for c in said), format_table(said)
    assert "verdict: GUESSING" in said[0].detail


def test_the_table_names_the_pair_a_claim_was_measured_on():
    line = format_table([Claim("lesion", "a claim", 0, 0.5, "share", "numbers", "shipped resnet20 pair")])
    assert line.startswith("holds  lesion        seed 0 (shipped resnet20 pair)  margin +0.5")
