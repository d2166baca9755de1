"""resviz.classroom: the class state every server process shares (presenting, who is here, the vote)."""
import threading

import diskcache
import pytest

from resviz import class_store, classroom, disk_cache
from resviz.classroom import ClassError, Classroom
from resviz.inputs.text import md


@pytest.fixture
def room(tmp_path):
    with diskcache.Cache(str(tmp_path / "cache")) as store:
        yield Classroom(store=store)


def test_the_teacher_key_is_compared_on_the_server_and_never_empty(monkeypatch):
    monkeypatch.delenv(classroom.KEY_ENV, raising=False)
    assert not classroom.is_teacher_key("") and not classroom.is_teacher_key(None)
    monkeypatch.setenv(classroom.KEY_ENV, "s3cret-key")
    assert classroom.is_teacher_key("s3cret-key")
    assert not classroom.is_teacher_key("s3cret-ke") and not classroom.is_teacher_key("")


def test_presenting_numbers_each_new_view_and_ignores_the_same_one(room):
    assert room.view() is None
    v1 = room.present("training", {"tr_pair": "deep", "tr_seed": "3"})
    assert (v1.page, v1.query, v1.version) == ("training", {"tr_pair": "deep", "tr_seed": "3"}, 1)
    assert room.present("training", {"tr_seed": "3", "tr_pair": "deep"}).version == 1  # same view: no new version
    assert room.present("lesion", {}).version == 2
    room.stop_presenting()
    assert room.view() is None


def test_a_closed_teacher_tab_stops_leading_after_a_minute(room):
    room.present("paths", {}, now=1000.0)
    assert room.view(now=1000.0 + classroom.PRESENTING_S - 1).page == "paths"
    assert room.view(now=1000.0 + classroom.PRESENTING_S + 1) is None
    room.still_presenting(now=1000.0 + classroom.PRESENTING_S)
    assert room.view(now=1000.0 + classroom.PRESENTING_S + 1).version == 1


def test_a_second_process_sees_the_same_class(tmp_path):
    """Two replicas: two handles on one cache folder."""
    with diskcache.Cache(str(tmp_path)) as a, diskcache.Cache(str(tmp_path)) as b:
        Classroom(store=a).present("paths", {"pa_samples": "4"})
        Classroom(store=a).ask("Which is lower?", ["plain-20", "plain-56"])
        other = Classroom(store=b)
        assert other.view().page == "paths" and other.question().answers == ("plain-20", "plain-56")


def test_roster_counts_students_not_the_teacher_and_forgets_who_left(room):
    room.check_in("teacher-session", following=False, teacher=True, now=100.0)
    for i in range(3):
        room.check_in(f"student-{i}", following=i < 2, now=100.0)
    assert room.roster(now=101.0) == classroom.Roster(students=3, following=2, teacher=True)
    room.check_in("student-0", following=True, now=100.0 + classroom.HERE_S + 1)
    assert room.roster(now=100.0 + classroom.HERE_S + 1) == classroom.Roster(1, 1, False)


def test_no_session_id_is_kept(room):
    room.check_in("8f1c-session-id", following=True)
    q = room.ask("Q?", ["a", "b"])
    room.vote("8f1c-session-id", q.id, 1)
    raw = "".join(str(room.store.get(k)) for k in room.store.iterkeys())
    assert "8f1c" not in raw


def test_votes_hidden_until_revealed_and_locked_when_the_run_starts(room):
    q = room.ask("After 300 steps, which ends lower?", ["plain-20", "plain-56", " "])
    assert q.answers == ("plain-20", "plain-56")  # blank answers dropped
    room.vote("s1", q.id, 0)
    room.vote("s2", q.id, 1)
    room.vote("s1", q.id, 1)  # a change of mind before the lock replaces the vote
    assert room.question().tally == [0, 2] and not room.question().revealed
    room.lock()
    with pytest.raises(ClassError, match="locked"):
        room.vote("s3", q.id, 0)
    with pytest.raises(ClassError, match="locked"):
        room.vote("s1", q.id, 0)
    assert room.question().tally == [0, 2] and room.my_vote("s1") == 1
    assert room.reveal().revealed


def test_bad_votes_and_questions_are_refused(room):
    with pytest.raises(ClassError):
        room.ask("Only one answer?", ["yes"])
    q = room.ask("Q?", ["a", "b"])
    with pytest.raises(ClassError, match="not one of the answers"):
        room.vote("s", q.id, 2)
    room.ask("Next?", ["c", "d"])
    with pytest.raises(ClassError, match="another one"):
        room.vote("s", q.id, 0)  # a stale page voting on the old question


def test_thirty_votes_at_once_none_lost(tmp_path):
    with diskcache.Cache(str(tmp_path)) as store:
        q = Classroom(store=store).ask("Q?", ["a", "b", "c"])
        go = threading.Barrier(30)

        def vote(i):
            with diskcache.Cache(str(tmp_path)) as own:  # each like its own server process
                go.wait()
                Classroom(store=own).vote(f"student-{i}", q.id, i % 3)

        threads = [threading.Thread(target=vote, args=(i,)) for i in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert Classroom(store=store).question().tally == [10, 10, 10]


def test_without_a_teacher_key_no_page_polls_the_class(monkeypatch, tmp_path, quiet_bell):
    """The embedded default (no RESVIZ_TEACHER_KEY): the sidebar has its link and arc, but nothing reads or writes the
    class state (no follower fragment, no vote fragment); with a key, every page checks in."""
    from helpers import new_app
    from resviz import ui_classroom

    calls = []
    store = diskcache.Cache(str(tmp_path))

    def room():  # a page's reads (a bell thread left by an earlier test of this process may read the class too)
        if threading.current_thread().name != "resviz-class-bell":
            calls.append(1)
        return Classroom(store=store)

    monkeypatch.setattr(ui_classroom, "room", room)
    monkeypatch.delenv(classroom.KEY_ENV, raising=False)
    new_app()
    assert calls == []
    monkeypatch.setenv(classroom.KEY_ENV, "k")
    new_app()
    assert calls and Classroom(store=store).roster().students == 1


def test_the_view_version_never_goes_back(room):
    """A follower compares one number: a new lesson's first view must not repeat a number it has shown."""
    assert room.view_version() == 0
    assert room.present("paths", {}).version == 1 and room.view_version() == 1
    room.present("paths", {})  # the same view: still presenting, nothing new to show
    assert room.view_version() == 1
    room.stop_presenting()
    assert room.view_version() == 2  # followers hear that the lead is over
    room.stop_presenting()  # not leading: nothing changes
    assert room.view_version() == 2
    assert room.present("paths", {}).version == 3


def test_a_reload_cannot_change_a_locked_vote(room):
    """A reload is a new browser session: after the lock it can neither vote again nor change the tally."""
    q = room.ask("Which ends lower?", ["plain-20", "plain-56"])
    room.vote("tab-before-reload", q.id, 0)
    room.lock()
    for voter, choice in (("tab-after-reload", 1), ("tab-before-reload", 1)):
        with pytest.raises(ClassError, match="locked"):
            room.vote(voter, q.id, choice)
    assert room.question().tally == [1, 0] and room.my_vote("tab-after-reload") is None


@pytest.fixture
def shared_room(monkeypatch, tmp_path, quiet_bell):
    """ui_classroom's class state on a temporary store, and a teacher key set."""
    from resviz import ui_classroom

    store = diskcache.Cache(str(tmp_path))
    monkeypatch.setattr(ui_classroom, "room", lambda: Classroom(store=store))
    monkeypatch.setenv(classroom.KEY_ENV, "k")
    yield Classroom(store=store)
    store.close()


def test_the_bell_reruns_each_follower_once_for_a_new_view(shared_room, monkeypatch):
    from resviz import ui_classroom

    rung, gone = [], {"left-the-class"}
    monkeypatch.setattr(ui_classroom, "rerun_session", lambda sid: sid not in gone and not rung.append(sid))
    bell = ui_classroom.Bell()
    bell._thread = "not started"  # the test rings by hand
    assert bell.ring() == []  # nobody follows: the class state is not even read
    v = shared_room.present("shattered", {"sh_seed": "5"}).version
    bell.watch("shows-it", v)
    bell.watch("behind", v - 1)
    bell.watch("left-the-class", v - 1)
    assert bell.ring() == ["behind"] and rung == ["behind"]
    assert bell.watching() == {"shows-it": v, "behind": v}  # rung once: its own run says what it shows
    bell.watch("behind", v - 1)  # its older run, still going, cannot make it be rung again
    assert bell.ring() == []
    shared_room.present("shattered", {"sh_seed": "6"})
    assert sorted(bell.ring()) == ["behind", "shows-it"]
    bell.forget("behind")
    assert list(bell.watching()) == ["shows-it"]
    bell.ring_again("shows-it")  # its rerun could not be asked for: the next look rings it again
    assert bell.ring() == ["shows-it"] and bell.ring() == []


MEASURED = "plain-56 ended *higher*: 2.10 against 1.95"


def _beside_app():
    from streamlit.testing.v1 import AppTest

    def script(measured):
        from resviz import ui_classroom

        ui_classroom.prediction_beside(measured)

    return AppTest.from_function(script, args=(MEASURED,), default_timeout=30)


def test_the_class_prediction_beside_what_was_measured(shared_room):
    at = _beside_app().run()
    assert not at.markdown and not at.button  # no question: nothing drawn
    q = shared_room.ask("Which ends lower after 300 steps?", ["plain-20", "plain-56"])
    shared_room.vote("someone", q.id, 0)
    at.run()
    shown = " ".join(m.value for m in at.markdown)
    assert f"**Measured:** {md(MEASURED)}" in shown and "*higher*" not in shown  # escaped
    assert "The tally shows when the teacher reveals it." in [c.value for c in at.caption] and not at.button
    teacher = _beside_app()
    teacher.session_state["class_teacher"] = True
    teacher.run()
    assert not any("1 of 1" in str(p.proto.text) for p in teacher.get("progress"))  # hidden until revealed
    teacher.button(key="class_reveal_beside").click().run()
    assert shared_room.question().revealed
    assert [p.proto.text for p in teacher.get("progress")] == [f"{md('plain-20')}: 1 of 1", f"{md('plain-56')}: 0 of 1"]
    assert len(at.run().get("progress")) == 2  # the students see it too


def test_the_teachers_panel_counts_runs_and_says_when_the_cluster_is_unwell(monkeypatch):
    from resviz import cluster, ui_classroom

    text = ui_classroom.panel_text(classroom.Roster(students=3, following=2, teacher=True))
    assert text.startswith("**3** students here, **2** following you · runs: ")
    monkeypatch.setattr(cluster, "health", lambda: "The cluster's scheduler has not answered since 10:02.")
    assert ui_classroom.cluster_health().startswith("The cluster's scheduler")
    monkeypatch.delattr(cluster, "health")
    assert ui_classroom.cluster_health() is None


def test_without_a_scheduler_the_class_is_in_the_disk_cache_and_the_teacher_is_told(monkeypatch):
    monkeypatch.delenv(class_store.SCHEDULER_ENV, raising=False)
    assert Classroom().store is disk_cache.cache()
    assert "other hosts do not" in class_store.health()


def test_the_teachers_panel_says_when_the_class_is_not_on_its_scheduler(monkeypatch):
    from resviz import class_store, ui_classroom

    monkeypatch.delenv(class_store.SCHEDULER_ENV, raising=False)
    assert ui_classroom.class_store_health() is None  # the one-host default: nothing to warn about
    monkeypatch.setattr(class_store, "health", lambda: "The class's scheduler has not answered since 10:00")
    assert ui_classroom.class_store_health() is None
    monkeypatch.setenv(class_store.SCHEDULER_ENV, "tcp://127.0.0.1:1")
    assert "has not answered" in ui_classroom.class_store_health()


def _follower_app():
    from streamlit.testing.v1 import AppTest

    def script():
        from types import SimpleNamespace

        import streamlit as st

        from resviz import ui_classroom

        ui_classroom._follow("shattered")  # as lead_or_follow does, before the page's widgets
        st.number_input("Initialisation seed", 0, 1000, 0, key="sh_seed", bind="query-params")
        ui_classroom.run_ended(SimpleNamespace(url_path="shattered"))

    return AppTest.from_function(script, default_timeout=30)


def test_a_follower_whose_first_run_could_not_set_a_widget_is_rung_again_until_it_shows_the_view(shared_room,
                                                                                                   monkeypatch):
    """A run that began before the page's seed input was first drawn in this session cannot set it: the follower
    stays on seed 0. It is not taken as showing the view; the bell rings it again, and its next run shows it."""
    from resviz import ui_classroom

    rung = []
    monkeypatch.setattr(ui_classroom.Bell, "ring_again", lambda self, sid: rung.append(sid))
    v = shared_room.present("shattered", {"sh_seed": "5"}).version
    at = _follower_app().run()
    assert at.number_input(key="sh_seed").value == 0  # its first run: the input did not exist when the run began
    assert ("_class_applied" in at.session_state and at.session_state["_class_applied"]) != v  # not taken as shown
    assert len(rung) == 1
    at.run()  # the bell's rerun
    assert at.number_input(key="sh_seed").value == 5 and at.session_state["_class_applied"] == v
    assert len(rung) == 1  # shown: not rung again


def test_a_view_a_follower_cannot_show_is_taken_as_shown_after_a_few_tries(shared_room, monkeypatch):
    from resviz import ui_classroom

    rung = []
    monkeypatch.setattr(ui_classroom.Bell, "ring_again", lambda self, sid: rung.append(sid))
    v = shared_room.present("shattered", {"sh_seed": "5000"}).version  # more than the follower's input takes
    at = _follower_app()
    for _ in range(ui_classroom.MAX_SHOW_TRIES + 1):
        at.run()
    assert at.session_state["_class_applied"] == v and len(rung) == ui_classroom.MAX_SHOW_TRIES  # no endless reruns
    assert not at.exception


def test_a_rung_follower_whose_browser_stays_silent_is_rerun_at_most_twice(shared_room, quiet_bell, monkeypatch):
    """Streamlit 1.67 could drop a finished run's unsent messages (its end, its timers) when the next rerun started a
    new script runner: that browser never asked for anything again. A follower rung for a view whose browser then
    asks for nothing is rerun, twice at most; a session whose page runs is left to finish."""
    from resviz import ui_classroom

    rerun, busy, now = [], {"runs-its-page"}, [1000.0]
    monkeypatch.setattr(ui_classroom, "rerun_session", lambda sid: not rerun.append(sid))
    monkeypatch.setattr(ui_classroom, "session_idle", lambda sid: sid not in busy)
    bell, stall = quiet_bell, ui_classroom.STALL_S
    bell.clock = lambda: now[0]
    v = shared_room.present("shattered", {"sh_seed": "5"}).version
    for sid in ("silent", "alive", "runs-its-page", "shows-it"):
        bell.watch(sid, v if sid == "shows-it" else v - 1)
    assert sorted(bell.ring()) == ["alive", "runs-its-page", "silent"]
    rerun.clear()
    now[0] += 0.5
    bell.ran("silent"), bell.ran("alive")  # their rung runs ended
    bell.heard("silent")  # a timer request queued behind that run: it says nothing of what the browser got
    now[0] += 2
    bell.heard("alive")  # its timer, after the run's end: it is alive
    now[0] += stall
    assert bell.wake_stalled() == ["silent"]  # never rung: "shows-it"; its page runs: "runs-its-page"
    now[0] += stall + 1
    assert bell.wake_stalled() == ["silent"]  # the second and last time for this ring
    now[0] += stall + 1
    assert bell.wake_stalled() == []
    assert rerun == ["silent", "silent"]
