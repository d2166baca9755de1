"""The lesson-claims check at CI size: every lesson's headline claim holds on seeds 0-4 (python -m resviz.claims)."""
import pytest

from resviz.claims import SEEDS, format_table, lesson_claims
from resviz.lessons import LESSONS

# Lessons whose headline claim issue 12 names, checked at CI size. The loss landscape's claim holds only for deep
# pairs (Li et al. 2018, Fig. 5: at 20 layers both are smooth), so it is checked with --full only.
CHECKED_AT_CI_SIZE = {"training", "signal_flow", "lesion", "paths", "shattered"}


@pytest.mark.claims
@pytest.mark.parametrize("lesson", [lesson.name for lesson in LESSONS])
def test_every_claim_of_the_lesson_holds_on_every_seed(lesson):
    claims = lesson_claims(lesson, SEEDS, full=False)
    print(format_table(claims))
    failed = [c for c in claims if not c.holds]
    assert not failed, "\n" + format_table(failed)
    assert all(c.lesson == lesson for c in claims)
    if lesson in CHECKED_AT_CI_SIZE:
        assert claims, f"{lesson} states a headline claim: it must check it"
    if claims:  # a lesson that states claims checks them on every seed
        assert {c.seed for c in claims} == set(SEEDS)
