"""The lesson-claims check at CI size: every lesson's headline claim holds on seeds 0-4 (python -m resviz.claims)."""
import pytest

from resviz.claims import SEEDS, format_table, lesson_claims
from resviz.lessons import LESSONS


@pytest.mark.claims
@pytest.mark.parametrize("lesson", [lesson.name for lesson in LESSONS])
def test_every_claim_of_the_lesson_holds_on_every_seed(lesson):
    claims = lesson_claims(lesson, SEEDS, full=False)
    print(format_table(claims))
    failed = [c for c in claims if not c.holds]
    assert not failed, "\n" + format_table(failed)
    assert all(c.lesson == lesson for c in claims)
    if claims:  # a lesson that states claims checks them on every seed
        assert {c.seed for c in claims} == set(SEEDS)
