"""The server's door (resviz.ui.guard_server): what one student's browser sends cannot break their tab, another
student's, or the server. Unit tests of the widget-value check and the upload quota, then a real ``streamlit run``
server fed hostile input by one session while a second session keeps working."""
from __future__ import annotations

import contextlib
import math
import threading
import urllib.request

import pytest
from starlette.exceptions import HTTPException
from streamlit.proto.WidgetStates_pb2 import WidgetStates
from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
from streamlit.runtime.uploaded_file_manager import UploadedFileRec

from resviz import ui
from resviz.inputs import limits
from resviz.tools.server import rss_mb
from resviz.tools.session import Session

NAN, INF = float("nan"), float("inf")
LAYERS_300_KB = ", ".join(["1"] * 150_000)  # before: one rerun took 50-86 s and +646-927 MB, then a budget message


# --- the widget values of one browser message ---
def states(**values) -> WidgetStates:
    out = WidgetStates()
    for wid, (kind, value) in values.items():
        w = out.widgets.add(id=wid)
        if kind == "double_array_value":
            w.double_array_value.data[:] = value
        elif kind == "string_array_value":
            w.string_array_value.data[:] = value
        elif kind == "files":
            for file_id in value:
                w.file_uploader_state_value.uploaded_file_info.add(file_id=file_id, name="x")
        else:
            setattr(w, kind, value)
    return out


def test_non_finite_numbers_are_dropped_and_long_texts_cut_before_any_session_sees_them():
    msg = states(nan=("double_value", NAN), inf=("double_value", -INF), ok=("double_value", 1e300),
                 slider=("double_array_value", [1.0, NAN]), range=("double_array_value", [1.0, 2.0]),
                 text=("string_value", LAYERS_300_KB), pick=("string_array_value", ["a" * 5000, "b"]),
                 seed=("int_value", 7), files=("files", ["f1", "f2"]))
    assert ui.clean_widget_states(msg) == 3
    kept = {w.id: w for w in msg.widgets}
    assert sorted(kept) == ["files", "ok", "pick", "range", "seed", "text"]
    assert kept["ok"].double_value == 1e300 and list(kept["range"].double_array_value.data) == [1.0, 2.0]
    assert kept["text"].string_value == LAYERS_300_KB[:limits.WIDGET_TEXT_CHARS]
    assert [len(v) for v in kept["pick"].string_array_value.data] == [limits.WIDGET_TEXT_CHARS, 1]
    assert all(math.isfinite(v) for w in msg.widgets for v in w.double_array_value.data)
    assert ui.uploads_named(msg) == {"f1", "f2"}


def test_a_clean_message_is_left_as_it_is():
    msg = states(a=("double_value", 3.0), b=("string_value", "2, 2, 2"), c=("bool_value", True))
    before = msg.SerializeToString()
    assert ui.clean_widget_states(msg) == 0 and msg.SerializeToString() == before


@pytest.mark.parametrize("query, kept", [("", ""), ("tr_seed=5&sl_block=layer1.0", "tr_seed=5&sl_block=layer1.0"),
                                         ("tr_seed=inf", ""), ("a=1&b=NaN&c=1e400&d=-Infinity&e=abc", "a=1&e=abc"),
                                         ("t=" + "x" * 5000, "t=" + "x" * limits.WIDGET_TEXT_CHARS)])
def test_a_links_non_finite_numbers_are_left_out(query, kept):
    assert ui.clean_query_string(query) == kept


# --- the upload quota ---
class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rec(file_id: str, mb: float) -> UploadedFileRec:
    return UploadedFileRec(file_id=file_id, name=f"{file_id}.pth", type="application/octet-stream",
                           data=bytes(int(mb * 2**20)))


@pytest.fixture
def quota(monkeypatch):
    monkeypatch.setenv("RESVIZ_SESSION_UPLOAD_MB", "10")
    manager, clock = MemoryUploadedFileManager("/_stcore/upload_file"), Clock()
    return ui.UploadQuota(manager, clock), manager, clock


def held(manager, session="s") -> list[str]:
    return sorted(f.file_id for f in manager.file_storage.get(session, {}).values())


def test_a_session_holds_at_most_its_quota_of_uploads_and_others_are_not_touched(quota):
    q, manager, _ = quota
    manager.add_file("s", rec("a", 4))  # through the manager, as Streamlit's upload route calls it
    manager.add_file("s", rec("b", 4))
    with pytest.raises(HTTPException) as refused:
        manager.add_file("s", rec("c", 4))  # 12 MB > 10
    assert refused.value.status_code == 413 and "10 MB" in refused.value.detail
    manager.add_file("other", rec("c", 4))  # another student's quota is their own
    assert held(manager) == ["a", "b"] and held(manager, "other") == ["c"] and q.bytes_held("s") == 8 * 2**20
    manager.add_file("s", rec("a", 5))  # the same file sent again replaces it
    assert q.bytes_held("s") == 9 * 2**20
    with pytest.raises(HTTPException):
        manager.add_file("s", rec("a", 7))  # refused: the file it would have replaced is still held and counted
    assert q.bytes_held("s") == 9 * 2**20 and len(manager.get_files("s", ["a"])[0].data) == 5 * 2**20


def test_a_session_holds_at_most_so_many_files(quota):
    _, manager, _ = quota
    for i in range(limits.SESSION_UPLOAD_FILES):
        manager.add_file("s", rec(f"f{i}", 0.001))
    with pytest.raises(HTTPException):
        manager.add_file("s", rec("one-more", 0.001))
    manager.remove_file("s", "f0")  # the browser's delete frees a place
    manager.add_file("s", rec("one-more", 0.001))


def test_uploads_no_widget_names_are_freed_after_the_grace(quota):
    q, manager, clock = quota
    manager.add_file("s", rec("kept", 4))
    manager.add_file("s", rec("dropped", 4))
    q.named("s", {"kept"})  # a rerun right after the upload: the browser may not name it yet
    assert held(manager) == ["dropped", "kept"]
    clock.now = limits.UPLOAD_GRACE_S + 1
    q.named("s", {"kept"})
    assert held(manager) == ["kept"] and q.bytes_held("s") == 4 * 2**20
    manager.add_file("s", rec("new", 4))  # the freed room is usable again
    clock.now += limits.UPLOAD_GRACE_S + 1
    manager.add_file("s", rec("newer", 4))  # an upload frees what the latest message did not name ("new")
    assert held(manager) == ["kept", "newer"]
    manager.remove_session_files("s")
    assert q.bytes_held("s") == 0 and held(manager) == []


# --- a real server ---
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``streamlit run app.py`` with a small upload quota (8 MB), its pages opened once: (process, base URL)."""
    from helpers import served

    with served(log_path=tmp_path_factory.mktemp("safety") / "streamlit.log",
                env={"RESVIZ_WARM_UP": "0", "RESVIZ_SESSION_UPLOAD_MB": "8"}) as (proc, url):
        with Session(url, timeout=120) as warm:  # the first run installs the door; the pages the tests open warm
            assert warm.run("").ok and warm.run("training").ok
        yield proc, url


class Watcher(threading.Thread):
    """A second student's tab, rerunning a page until stopped: every rerun must render normally."""

    def __init__(self, url: str, page: str = ""):
        super().__init__(daemon=True)
        self.session, self.page, self.stop, self.runs = Session(url, timeout=120), page, threading.Event(), []
        self.ran = threading.Event()
        assert self.session.run(page).ok

    def run(self) -> None:
        while not self.stop.is_set():
            self.runs.append(self.session.run(self.page))
            self.ran.set()

    def finish(self) -> list:
        assert self.ran.wait(120), "the other student's tab never finished a rerun"
        self.stop.set()
        self.join(timeout=150)
        self.session.close()
        return self.runs


def alive(proc, url: str) -> bool:
    with urllib.request.urlopen(url + "/_stcore/health", timeout=30) as r:
        return proc.poll() is None and r.status == 200


@contextlib.contextmanager
def while_another_student_works(server):
    """A student's session (home page opened) for the with-block while a second student's tab reruns the home page:
    yields (session, the other's reruns so far); after, the other tab rendered every rerun and the server is up."""
    proc, url = server
    other = Watcher(url)
    other.start()
    try:
        with Session(url, timeout=120) as a:
            a.run("")
            yield a, other.runs
    finally:
        runs = other.finish()
    assert runs and all(r.ok for r in runs) and alive(proc, url), [r for r in runs if not r.ok]


def test_hostile_widget_values_break_nothing_while_another_student_works(server):
    proc, url = server
    rss0 = rss_mb(proc.pid)
    with while_another_student_works(server) as (a, runs):
        a.run("", widgets={"sel_family": "Custom"})
        r = a.run("", widgets={"sel_layers": LAYERS_300_KB})
        assert r.ok and r.seconds < 20, r  # refused at once, before anything is computed from it
        assert any(f"at most {limits.LAYERS_CHARS} characters" in e and "Keeping the previous model" in e
                   for e in r.errors), r.errors
        a.run("", widgets={"sel_layers": "2, 2, 2"})
        for value in (NAN, INF, -INF, 1e9):  # 1e9: above the widget's maximum (512)
            r = a.run("", widgets={"sel_width": value})
            assert r.ok and not r.errors, (value, r)
            assert a.run("").ok, value  # and the tab keeps working: NaN used to break every later rerun
        a.run("training")
        for value in (NAN, -INF, 1e12):
            assert a.run("training", widgets={"tr_seed": value}).ok, value
    assert len(runs) >= 3 and not [r for r in runs if r.errors], [r for r in runs if r.errors]
    assert rss_mb(proc.pid) - rss0 < 500  # before: +927 MB from the one 300 KB text


def test_a_message_over_the_servers_cap_closes_only_that_tab(server):
    with while_another_student_works(server) as (a, _):
        a.run("", widgets={"sel_family": "Custom"})
        assert a.run("", widgets={"sel_layers": "1" * 2_000_000}).status == "disconnected"  # maxWidgetStateSize


def test_uploads_past_a_sessions_quota_are_refused_and_the_server_stays_small(server):
    proc, url = server
    rss0 = rss_mb(proc.pid)
    with while_another_student_works(server) as (a, _):
        sent = [a.upload(f"w{i}.pth", bytes(3 * 2**20))[0] for i in range(4)]  # 3 MB each against 8 MB
        assert sent == [204, 204, 413, 413], sent
        assert a.run("").ok
    assert rss_mb(proc.pid) - rss0 < 200


BOUND_APP = """
import streamlit as st

from resviz import ui

ui.guard_server()
st.sidebar.write("sidebar")
seed = st.number_input("Seed", 0, 10_000, 0, key="seed", bind="query-params")
st.write(f"seed {seed}")
"""


@pytest.fixture(scope="module")
def bound_server(tmp_path_factory):
    """A tiny app whose whole-number input is bound to the URL, behind the door: (process, base URL)."""
    from helpers import served_app

    with served_app(tmp_path_factory.mktemp("bound_app"), BOUND_APP) as server:
        yield server


def test_a_link_with_an_infinite_number_opens_the_page_with_the_default(bound_server):
    proc, url = bound_server
    with Session(url, timeout=120) as first:  # the server's first run installs the door
        assert first.run(query_string="seed=7").ok
    with Session(url, timeout=120) as a:
        for query in ("seed=inf", "seed=-1e400", "seed=nan"):  # inf: Streamlit's int() raised an exception box
            r = a.run(query_string=query)
            assert r.ok and "seed 0" in r.texts, (query, r)
        r = a.run(query_string="seed=42")
        assert r.ok and "seed 42" in r.texts, r
    assert alive(proc, url)


# --- a fragment's rerun after a finished run ---
def test_a_fragment_rerun_waits_until_the_last_runs_messages_are_handled(monkeypatch):
    """Streamlit 1.67 starts a new script runner for a fragment's rerun at once and drops the messages its finished
    runner had not sent (the page's end, its timers): the browser then never asked again. The rerun now waits for
    that runner's release (its SHUTDOWN), then goes on; other reruns are not held."""
    import asyncio
    from types import SimpleNamespace

    from streamlit.proto.ClientState_pb2 import ClientState
    from streamlit.runtime.app_session import AppSession
    from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType

    started = []
    monkeypatch.setattr(AppSession, "request_rerun", lambda session, client_state=None: started.append(
        (client_state.fragment_id if client_state else None, session._scriptrunner)))
    ui._fragment_reruns_wait_for_the_last_run()
    ui._fragment_reruns_wait_for_the_last_run()  # once only
    finished = SimpleNamespace(_requests=SimpleNamespace(_state=ScriptRequestType.STOP))

    async def scenario():
        session = SimpleNamespace(_scriptrunner=finished, _event_loop=asyncio.get_running_loop())
        AppSession.request_rerun(session, ClientState(fragment_id="the-vote-panel"))
        AppSession.request_rerun(session, ClientState())  # a whole page's rerun: not held
        await asyncio.sleep(5 * ui.FRAGMENT_WAIT_S)
        assert started == [("", finished)]  # the fragment waits: the runner's messages are not handled yet
        session._scriptrunner = None  # its SHUTDOWN is handled: it is released
        for _ in range(500):
            if len(started) == 2:
                break
            await asyncio.sleep(ui.FRAGMENT_WAIT_S)
        assert started == [("", finished), ("the-vote-panel", None)]

    failed = []  # the scenario runs on an event loop of its own, in a thread: a test before may leave one running here

    def run() -> None:
        try:
            asyncio.run(scenario())
        except BaseException as e:  # noqa: BLE001 - raised below, in the test's thread
            failed.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    if failed:
        raise failed[0]
