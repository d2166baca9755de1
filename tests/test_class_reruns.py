"""What thirty followers rerun at once share instead of each doing it (issue 21: the class follows within 2 s): one
build of a figure, one read of the class's view per version, one read of the question."""
import threading

import diskcache
import pytest

from resviz import classroom, ui, ui_classroom


def _at_once(fn, n: int = 8) -> list:
    """``fn()`` in ``n`` threads released together; their results."""
    go, out = threading.Barrier(n), [None] * n

    def one(i):
        go.wait(timeout=30)
        out[i] = fn()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_a_figure_asked_by_many_sessions_at_once_is_built_once():
    builds, started = [], threading.Event()

    def make():
        builds.append(1)
        started.set()
        assert not threading.Event().wait(0.2)  # a slow build: the other sessions ask while it runs
        return {"figure": len(builds)}

    got = _at_once(lambda: ui.figure(("test single flight",), make))
    assert len(builds) == 1
    assert all(g is got[0] for g in got)  # the same (read-only) figure for every session


@pytest.fixture
def counted_room(monkeypatch, tmp_path):
    store = diskcache.Cache(str(tmp_path))
    reads = []

    class Counted(classroom.Classroom):
        def view(self, now=None):
            reads.append("view")
            return super().view(now)

        def question(self):
            reads.append("question")
            return super().question()

    monkeypatch.setattr(ui_classroom, "room", lambda: Counted(store=store))
    ui_classroom._reads.clear()
    yield classroom.Classroom(store=store), reads  # the teacher's writes: not counted
    ui_classroom._reads.clear()
    store.close()


def test_followers_rerun_at_once_read_the_view_once_and_a_new_version_afresh(counted_room, monkeypatch):
    room, reads = counted_room
    bell = ui_classroom.Bell()
    monkeypatch.setattr(ui_classroom, "bell", lambda: bell)
    monkeypatch.setattr(ui_classroom, "rerun_session", lambda sid: True)
    room.present("shattered", {"sh_seed": "5"})
    bell.watch("a follower", 0)
    bell.ring()  # the bell's look: the class's version 1
    views = _at_once(ui_classroom.class_view)
    assert reads.count("view") == 1 and {v.query["sh_seed"] for v in views} == {"5"}
    room.present("shattered", {"sh_seed": "6"})  # the teacher's change, read within READ_EVERY_S
    bell.ring()  # the bell sees version 2 before it reruns the followers: they read the new view
    assert ui_classroom.class_view().query["sh_seed"] == "6" and reads.count("view") == 2


def test_a_vote_in_this_process_reads_the_question_afresh(counted_room):
    room, reads = counted_room
    q = room.ask("Which is lower?", ["plain-20", "plain-56"])
    assert _at_once(ui_classroom.class_question)[0].votes == {} and reads.count("question") == 1
    room.vote("a student", q.id, 1)
    ui_classroom._question_changed()  # what the Vote button's callback does after the vote
    assert ui_classroom.class_question().votes == {classroom.member("a student"): 1}
