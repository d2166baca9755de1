"""resviz.tools.load_class: what a student's tab counts as showing the teacher's change, and the figures.

The whole script against a real server runs in tests/test_browser_class.py (two students, on the class's server)."""
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from resviz.tools import load_class


def _number_input(key: str, value: float, set_value: bool = True) -> ForwardMsg:
    msg = ForwardMsg()
    el = msg.delta.new_element.number_input
    el.id, el.value, el.set_value = f"$$ID-0123abcd-{key}", value, set_value
    return msg


def test_a_student_shows_the_change_when_the_server_sets_the_widget_to_it():
    assert load_class.shows(_number_input("sh_seed", 5), "sh_seed", 5.0)
    assert not load_class.shows(_number_input("sh_seed", 4), "sh_seed", 5.0)  # an older value
    assert not load_class.shows(_number_input("sh_seed", 5, set_value=False), "sh_seed", 5.0)  # the student's own
    assert not load_class.shows(_number_input("sh_depth", 5), "sh_seed", 5.0)
    assert load_class.draws(_number_input("sh_seed", 0, set_value=False), "sh_seed")
    other = ForwardMsg()
    other.page_info_changed.query_string = "sh_seed=5"
    assert not load_class.shows(other, "sh_seed", 5.0) and not load_class.draws(other, "sh_seed")


def test_every_student_votes_and_then_tries_another_answer():
    plan = load_class.vote_plan(30, 3)
    assert [sum(v == a for v, _ in plan) for a in range(3)] == [10, 10, 10]
    assert all(vote != after for vote, after in plan)


def test_the_figures_count_what_was_missed_lost_and_changed():
    f = load_class.follow_figures([[0.2, 0.4, 1.0], [0.3, None, 0.5]])
    assert (f["shown"], f["missed"], f["max_s"]) == (5, 1, 1.0)
    assert f["every_student_s"] == [1.0, None]  # a change some student never showed has no 'every student' time
    assert f["median_s"] == 0.4
    plan = [(0, 1), (1, 0), (0, 1)]
    before = {"a": 0, "b": 1}  # the third vote was lost
    v = load_class.vote_figures(plan, [1, 1], before, {"a": 0, "b": 0})  # b changed after the lock
    assert (v["cast"], v["counted"], v["lost"], v["changed_after_lock"]) == (3, 2, 1, 1)
    assert v["expected_tally"] == [2, 1]
    table = load_class.format_table({"follow": f, "vote": {**v, "problems": []}, "following": 3,
                                     "page_arrival_s": None, "load_before": (9.5, 0, 0), "load_after": (10.0, 0, 0)})
    assert "| votes cast / counted / lost | 3 / 2 / 1 |" in table and "1.00, - s" in table
    assert "| class moved to the page (last student) | not in time |" in table
