"""The class in the app: Streamlit glue over ``resviz.classroom`` (``resviz.ui*`` are the only streamlit importers).

- Every view is a link: pages bind their widgets to the URL (``bind="query-params"``); ``share_ui`` shows the link and
  a QR code made offline (segno).
- The teacher leads: the teacher unlocks presenter controls with the server's key (``RESVIZ_TEACHER_KEY``); while
  they lead, every following student is moved to the teacher's page and settings within a second or two, and can
  step away and rejoin. The teacher's run publishes its view before any widget is drawn; each server process's
  ``Bell`` reads the class's version and starts a rerun of each following session that has not shown it.
- Predict, then reveal: the teacher asks a question, students vote in the sidebar, votes lock when the teacher starts
  the run, the tally shows when the teacher reveals it.
- The lesson arc: Previous / Next through the lessons in the order of ``resviz.lessons.LESSONS``.
"""
from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from urllib.parse import urlencode, urlsplit

import cachetools
import streamlit as st

from resviz import classroom, ui
from resviz.inputs import text
from resviz.lessons import LESSONS

log = logging.getLogger("resviz")
BELL_EVERY_S = 0.25  # how often a server process reads the class's version while one of its sessions follows
CHECK_IN_EVERY_S = 3.0  # how often a page says it is here (the roster forgets it after classroom.HERE_S); also
# the fallback look for a new view, should the server's rerun of a follower not have come
STALL_S = 2 * CHECK_IN_EVERY_S  # a follower rung for a view whose browser asked for nothing this long after that
# run ended is rerun, at most MAX_WAKES times for one ring (a hidden tab's timers are throttled: it costs no more)
MAX_WAKES = 2
READ_EVERY_S = 0.5  # how often a server process reads the class's view and question for all its sessions (each
# read of the shared store is a write transaction of its SQLite, one at a time: thirty followers' runs queued there)
MAX_KEY_TRIES = 5  # wrong teacher keys one session may try before the field is refused
MAX_SHOW_TRIES = 3  # runs a follower reruns for one view its widgets do not show yet, before it takes it as shown
# (a value its widget refuses would otherwise rerun it for ever)
ARC = ("", *(lesson.name for lesson in LESSONS))  # home, then the lessons in their teaching order (URL paths)


def room() -> classroom.Classroom:
    return classroom.Classroom()


def class_view() -> classroom.View | None:
    """``room().view()``, read once for this server process's sessions while the class's version is the one its bell
    last saw (the bell reads the version before it reruns followers, so a rerun follower reads the new view) and at
    most ``READ_EVERY_S`` old. Read afresh under AppTest (a test's writes are seen at once)."""
    if _app_test():
        return room().view()
    return _shared_read(room(), "view", bell().version)


def class_question() -> classroom.Question | None:
    """``room().question()``, shared by this server process's sessions like ``class_view`` (every student's vote
    panel reads it every 2 s); this process's own votes and question changes read it afresh (``_question_changed``)."""
    if _app_test():
        return room().question()
    return _shared_read(room(), "question", None)


_reads: cachetools.TTLCache = cachetools.TTLCache(maxsize=16, ttl=READ_EVERY_S)


@cachetools.cached(_reads, key=lambda r, what, version: (id(r.store), r.name, what, version),
                   condition=threading.Condition())
def _shared_read(r: classroom.Classroom, what: str, version: int | None):
    return getattr(r, what)()


def _question_changed() -> None:
    with _shared_read.cache_condition:
        for k in [k for k in list(_reads) if k[2] == "question"]:
            _reads.pop(k, None)


def _app_test() -> bool:
    from streamlit import config  # its get_option, which AppTest patches (st.get_option is bound at import)

    return bool(config.get_option("global.appTest"))


def session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def is_teacher() -> bool:
    return bool(st.session_state.get("class_teacher")) and classroom.teacher_key_set()


def lead_or_follow(page) -> None:
    """At the top of every run, before any widget is drawn (app.py). A leading teacher's page and settings become the
    class's view now: the URL the browser sent with this run already holds a changed setting, so the class need not
    wait for the teacher's page to finish. A following student's session shows the class's latest view."""
    if not classroom.teacher_key_set():
        return  # no teacher can lead this server: nothing to read, nothing to poll
    if is_teacher():
        bell().forget(session_id())  # unlocked in a tab that followed: the teacher's own runs are never rung
        present(page)
        return
    for key, value in st.session_state.pop("_class_pending", {}).items():  # a move to another page's settings
        st.session_state[key] = value
    _follow(page.url_path)


def _follow(current: str) -> None:
    """Show the class's latest view: its page when it is new, its settings on every run of its page. Streamlit tells
    a browser a widget's value only in a run that sets it, and a run can be stopped, or its messages dropped, by a
    newer rerun (the server's and the browser's cross): setting the view once left 7% of 30 followers on the old
    value (resviz.tools.load_class). A follower's own change of a setting lasts until its next run: to explore,
    it steps away."""
    ss, sid = st.session_state, session_id()
    if not ss.setdefault("class_following", True):
        bell().forget(sid)
        return
    view = class_view()
    version = view.version if view is not None else room().view_version()
    bell().watch(sid, version)
    if version != ss.get("_class_applied"):
        ss["_class_showing"], ss["_class_moving"] = version, True
    elif view is None or view.page != current:
        return  # shown, and this session went to another page since
    if view is not None:
        go_to(view, current)


def run_ended(page) -> None:
    """After the page's run ended (app.py): a follower's run has drawn the view it set, if its widgets show it
    (``shows``); a leading teacher's widgets have corrected or dropped settings in the URL, and those are the
    class's view (a stopped run would publish the settings it started with over a newer run's, so this is not
    called from a ``finally``)."""
    ss = st.session_state
    bell().ran(session_id())  # a rung follower's browser should now ask for its timers
    if "_class_showing" in ss:
        version = ss.pop("_class_showing")
        view = class_view()
        tried, tries = ss.get("_class_unshown", (None, 0))
        tries = tries + 1 if tried == version else 1
        if view is None or view.version != version or shows(view, page.url_path) or tries > MAX_SHOW_TRIES:
            ss["_class_applied"] = version
        else:  # rung again at once (the bell), and the next run sets the widgets this run drew for the first time
            ss["_class_unshown"] = (version, tries)
            bell().ring_again(session_id())
    present(page)


def shows(view: classroom.View, current: str) -> bool:
    """Whether this session's page and URL-bound widgets now hold ``view``. A run that began before a widget of the
    page was first drawn in this session cannot set it (``widget_values`` knows no such widget yet): a follower
    moved to Shattered gradients, rung for the teacher's seed before its first run there drew the seed input,
    stayed on seed 0 while believing it showed the teacher's view (the follow test under load: 2 of 3 followers,
    for 20 s)."""
    if view.page != current:
        return False
    values, keys = view_params(), _bound_keys()
    return all(values.get(key) == value for key, value in view.query.items() if key in keys)


def _bound_keys() -> set[str]:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    state = get_script_run_ctx().session_state._state  # Streamlit 1.67's bindings: pinned in requirements.txt
    return set(state.query_params._bindings_by_param)


def class_ui(page) -> None:
    """The sidebar's class controls for ``page`` (app.py, before the page runs)."""
    with st.sidebar:
        arc_ui(page.url_path)
        share_ui(page.url_path)
        if not classroom.teacher_key_set():  # no teacher can lead this server: nothing to follow or vote on,
            return  # and no page polls for it
        teacher_ui()
        _follow_ui()
        vote_ui()


def present(page) -> None:
    """A leading teacher's page and settings become the class's view: at the start of each of the teacher's runs
    (the browser sends a changed setting in the URL of the run it asks for) and at its end (a value Streamlit
    corrected, a default the widget dropped from the URL)."""
    if is_teacher() and st.session_state.get("class_lead"):
        room().present(page.url_path, view_params())


def view_params() -> dict[str, str]:
    """This session's settings as the class's view: its URL, and every URL-bound widget's value written as the URL
    would hold it. Streamlit leaves out of the URL a value the page set itself (Shortcut lab's channels: 4 on
    the teacher's screen, no ``sl_cin`` in the URL), which followers would read as the widget's default (0)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    from streamlit.runtime.state.query_params import _coerce_value_for_query_url

    params = st.query_params.to_dict()
    state = get_script_run_ctx().session_state._state  # Streamlit 1.67's bindings: pinned in requirements.txt
    for key, binding in list(state.query_params._bindings_by_param.items()):
        meta = state._new_widget_state.widget_metadata.get(binding.widget_id)
        if meta is None or key not in st.session_state:
            continue
        try:
            value = _coerce_value_for_query_url(meta.serializer(st.session_state[key]), meta.value_type)
        except Exception:  # noqa: BLE001 - a value this widget cannot write: the URL's stays
            continue
        if isinstance(value, str):
            params[key] = value
        elif isinstance(value, list) and len(value) == 1:
            params[key] = value[0]
    return params


# --- the arc -------------------------------------------------------------------------------------------------
def arc_ui(current: str) -> None:
    """Previous and Next through the lessons, with where this page is in the story."""
    if current not in ARC:
        return
    i = ARC.index(current)
    left, right = st.columns(2)
    if i > 0:
        left.page_link(_page_file(ARC[i - 1]), label="Previous", icon=":material/arrow_back:")
    if i + 1 < len(ARC):
        right.page_link(_page_file(ARC[i + 1]), label="Next", icon=":material/arrow_forward:")
    st.caption(f"Lesson {i} of {len(ARC) - 1}" if i else "Start here, then Next")


def _page_file(url_path: str) -> str:
    return f"pages/{url_path or 'home'}.py"


# --- every view is a link ------------------------------------------------------------------------------------
def view_link(url_path: str, params: dict[str, str]) -> str:
    """The link that opens this view: the address the student's browser uses, the page and its settings."""
    base = urlsplit(st.context.url or "http://localhost:8501/")
    host = base.netloc
    if base.hostname in ("localhost", "127.0.0.1", "::1"):  # students cannot reach the teacher's localhost
        host = f"{_network_address()}:{base.port or 8501}"
    root = base.path.rstrip("/")
    for name in ARC:  # st.context.url names the page the session opened on: keep only the app's base path
        if name and root.endswith(f"/{name}"):
            root = root[: -len(name) - 1]
    query = urlencode(sorted(params.items()))
    return f"{base.scheme}://{host}{root}/{url_path}" + (f"?{query}" if query else "")


def _network_address() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "localhost"


@functools.lru_cache(maxsize=256)  # one per view the class shares, drawn on every rerun of every student
def qr_svg(link: str) -> str:
    """A QR code of ``link`` as SVG text (segno: pure Python, offline). SVG, not PNG: Streamlit decodes and encodes
    again every PNG it is given, on every rerun of every student (a twentieth of a follower's rerun)."""
    import segno

    return segno.make(link, error="m").svg_inline(scale=6, border=2)


def share_ui(url_path: str) -> None:
    link = view_link(url_path, st.query_params.to_dict())
    with st.popover("Share this view", icon=":material/qr_code_2:", width="stretch"):
        st.caption("Opens this page with these settings (model, seeds, steps): the same shared results.")
        st.code(link, language=None, wrap_lines=True)
        st.image(qr_svg(link), width=240)


# --- the teacher leads -----------------------------------------------------------------------------------------
def teacher_ui() -> None:
    with st.expander("Teacher", icon=":material/co_present:", expanded=is_teacher()):
        if not is_teacher():
            _unlock_ui()
            return
        st.toggle("Lead the class", key="class_lead",
                  help="Every student who follows moves to your page and settings as you change them.")
        if not st.session_state.get("class_lead"):
            room().stop_presenting()
        _roster_ui()
        question_form_ui()


def _unlock_ui() -> None:
    tries = st.session_state.get("class_key_tries", 0)
    if tries >= MAX_KEY_TRIES:
        st.error("Too many wrong keys from this browser tab.")
        return
    with st.form("class_unlock_form", border=False):  # the key and the press reach the server in one message: a
        # press right after typing in a plain text input could only commit the text (the press was lost under load)
        st.text_input("Teacher key", type="password", key="class_key", max_chars=200,
                      help="Set by the teacher when the server starts (RESVIZ_TEACHER_KEY).")
        st.form_submit_button("Unlock presenter controls", key="class_unlock", on_click=_check_key)
    if st.session_state.get("class_key_refused"):
        st.error("That is not the teacher key.")


def _check_key() -> None:
    ss = st.session_state
    candidate, ss["class_key"] = ss.get("class_key", ""), ""  # the key never stays in the session's widgets
    ok = classroom.is_teacher_key(candidate)
    ss["class_teacher"], ss["class_key_refused"] = ok, not ok
    ss["class_key_tries"] = 0 if ok else ss.get("class_key_tries", 0) + 1
    if ok:  # check in as the teacher on this run: the roster stops counting this tab as a student now
        ss["_class_checked_in"] = 0.0


@ui.timed_fragment(run_every=2.0)
def _roster_ui() -> None:
    """The teacher's class panel: students here and following, the server's runs, the cluster if it is unwell."""
    st.caption(panel_text(room().roster()))
    for sentence in (cluster_health(), class_store_health()):
        if sentence:
            st.warning(text.md(sentence))


def panel_text(r: classroom.Roster) -> str:
    from resviz import runs

    states = [status.state.value for _, status in runs.registry().overview()]
    return (f"**{r.students}** students here, **{r.following}** following you · runs: "
            f"{states.count('running')} running, {states.count('queued')} queued")


def cluster_health() -> str | None:
    """``resviz.cluster.health()``'s sentence (the scheduler cannot be reached), when that module is there."""
    try:
        from resviz import cluster
    except ImportError:
        return None
    health = getattr(cluster, "health", None)
    return health() if callable(health) else None


def class_store_health() -> str | None:
    """Where the class lives, said only when it should be on the Dask scheduler and is not (the one-host default,
    with no scheduler set, is said in deploy/README.md, not on every teacher's panel)."""
    from resviz import class_store

    return class_store.health() if os.environ.get(class_store.SCHEDULER_ENV) else None


# --- following -------------------------------------------------------------------------------------------------
@ui.timed_fragment(run_every=CHECK_IN_EVERY_S)
def _follow_ui() -> None:
    """Say this session is here; while the teacher leads, this student can step away and rejoin."""
    ss = st.session_state
    following = ss.setdefault("class_following", True)
    teacher = is_teacher()
    # a run that shows a new view (the bell's) leaves its check-in to the next timed run (the roster forgets after
    # HERE_S), so that thirty followers rerun at once do not queue for the class state's write lock; a first run does
    moving = ss.pop("_class_moving", False) and "_class_checked_in" in ss
    if time.monotonic() - ss.get("_class_checked_in", 0.0) > CHECK_IN_EVERY_S and not moving:
        room().check_in(session_id(), following and not teacher, teacher)
        if teacher and ss.get("class_lead"):
            room().still_presenting()
        ss["_class_checked_in"] = time.monotonic()
    if following and not teacher:
        bell().heard(session_id())
    view = None if teacher else class_view()
    if view is None:
        return
    if not following:
        st.button("Rejoin the class", key="class_rejoin", icon=":material/group:", type="primary",
                  on_click=lambda: ss.update(class_following=True, _class_applied=None))
        return
    st.caption("Following the teacher's screen.")
    st.button("Step away to explore", key="class_step_away", on_click=lambda: ss.update(class_following=False))
    if view.version not in (ss.get("_class_applied"), ss.get("_class_showing")):  # the bell did not ring this
        st.rerun(scope="app")  # session's rerun: the page's run does


def go_to(view: classroom.View, current: str) -> None:
    """Show ``view`` in this session, from the top of a run: its settings into the bound widgets (before they are
    drawn, so each widget shows its value and writes it into the URL), and its page if it is another one."""
    if view.page not in ARC:
        return  # an unknown page: nothing to follow
    values = widget_values(view.query, set(st.query_params.keys()) | set(view.query))
    if view.page == current:
        st.session_state.update(values)
        return
    st.session_state["_class_pending"] = values  # the widgets this page shares with the next (model, projector)
    st.switch_page(_page_file(view.page), query_params=ui.unbound_query(view.query))


class Bell:
    """One per server process: while any of its sessions follows the teacher, it reads the class's version every
    ``BELL_EVERY_S`` and starts a rerun of each following session that has not shown it. Without it a follower
    waited for its own page's run to end (Streamlit runs a fragment's timed rerun after the page's run, not during
    it): 4-15 s on a loaded machine. A rerun started by the server stops the session's running page at its next
    element, as a student's own click does; the new run's first lines (``lead_or_follow``) show the view.

    It also wakes a stalled follower. Streamlit 1.67 dropped every message of a finished run that its server had not
    yet sent when the next rerun started a new script runner (``ui``'s door now holds such a rerun back): the
    browser never heard that the run ended, nor of its timers, and asked for nothing again, showing the old view
    for ever. A follower rung for a view whose browser asks for nothing in ``STALL_S`` after that run ended, while
    its session is idle on the server, is rerun (``wake_stalled``)."""

    def __init__(self):
        self._applied: dict[str, int] = {}  # session id -> the class version its page shows (or was rung for)
        self._rung: dict[str, tuple[float, int]] = {}  # session id -> (when its rung run ended or began, wakes)
        self.version: int | None = None  # the class's version at the last look (``class_view`` reads by it)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.clock = time.monotonic

    def watch(self, sid: str, version: int) -> None:
        """Session ``sid`` shows (or is showing) ``version``; an older run of it saying an older one changes nothing."""
        with self._lock:
            self._applied[sid] = max(version, self._applied.get(sid, version))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="resviz-class-bell", daemon=True)
                self._thread.start()

    def ring_again(self, sid: str) -> None:
        """Ring ``sid`` on the next look (its rerun could not be asked for)."""
        with self._lock:
            if sid in self._applied:
                self._applied[sid] = -1

    def ran(self, sid: str) -> None:
        """A run of ``sid`` ended (``run_ended``): a rung session's browser should ask for its timers from now."""
        with self._lock:
            if sid in self._rung:
                self._rung[sid] = (self.clock(), self._rung[sid][1])

    def heard(self, sid: str) -> None:
        """``sid``'s browser asked for its timed fragment: it is alive, and shows what the server sent it."""
        with self._lock:
            if sid in self._rung and self.clock() - self._rung[sid][0] > 1.0:  # not a request queued behind the run
                del self._rung[sid]

    def forget(self, sid: str) -> None:
        with self._lock:
            self._applied.pop(sid, None)
            self._rung.pop(sid, None)

    def wake_stalled(self) -> list[str]:
        """Rerun each rung follower idle on the server whose browser has asked for nothing in ``STALL_S`` since its
        run ended, at most ``MAX_WAKES`` times; returns them."""
        now = self.clock()
        with self._lock:
            stalled = [(sid, wakes) for sid, (at, wakes) in self._rung.items() if now - at > STALL_S]
        woken = []
        for sid, wakes in stalled:
            if not session_idle(sid):
                continue  # its page runs: its end is heard of (``ran``)
            with self._lock:
                if wakes + 1 >= MAX_WAKES:
                    self._rung.pop(sid, None)
                elif sid in self._rung:
                    self._rung[sid] = (now, wakes + 1)
            if rerun_session(sid):
                woken.append(sid)
        if woken:
            log.info("class bell: %d stalled followers rerun", len(woken))
        return woken

    def watching(self) -> dict[str, int]:
        with self._lock:
            return dict(self._applied)

    def ring(self) -> list[str]:
        """One look: the sessions rung for a new view (a session gone from the server is forgotten)."""
        waiting = self.watching()
        if not waiting:
            return []
        version = self.version = room().view_version()
        rung = []
        for sid, applied in waiting.items():
            if applied == version:
                continue
            with self._lock:
                if self._applied.get(sid) == applied:  # rung once: its new run says what it shows
                    self._applied[sid] = version
            if rerun_session(sid):
                rung.append(sid)
                with self._lock:
                    self._rung[sid] = (self.clock(), 0)
            else:
                self.forget(sid)
        return rung

    def _run(self) -> None:
        while True:
            time.sleep(BELL_EVERY_S)  # a server's background loop, not a test's wait
            try:
                self.ring()
                self.wake_stalled()
            except Exception:  # noqa: BLE001 - a failed look is retried; the fragment's check is the fallback
                log.warning("class bell: look failed", exc_info=True)


_bell: Bell | None = None
_bell_lock = threading.Lock()


def bell() -> Bell:
    """This server process's bell (started by the first session that follows)."""
    global _bell
    with _bell_lock:
        if _bell is None:
            _bell = Bell()
        return _bell


def rerun_session(sid: str) -> bool:
    """Start a rerun of session ``sid`` of this server process, on the session's event loop, as its browser would
    ask for one (``rerun_as_the_browser``); False when the session is gone or no server runs here (AppTest)."""
    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return False
    info = Runtime.instance()._session_mgr.get_active_session_info(sid)  # Streamlit 1.67's internals: pinned
    if info is None:
        return False
    info.session._event_loop.call_soon_threadsafe(rerun_as_the_browser, info.session)
    return True


def session_idle(sid: str) -> bool:
    """Whether session ``sid`` of this server process runs no script now (False when gone, or under AppTest)."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.app_session import AppSessionState

    if not Runtime.exists():
        return False
    info = Runtime.instance()._session_mgr.get_active_session_info(sid)  # Streamlit 1.67's internals: pinned
    return info is not None and info.session._state is AppSessionState.APP_NOT_RUNNING


def rerun_as_the_browser(session) -> None:
    """``AppSession.request_rerun`` with what the session's browser shows: its page, its URL and every widget's
    value. The session's last client state is not enough: Streamlit starts each rerun in a new script runner,
    which takes the rerun's widget values and URL as the page's (a new runner sees a page change), so a rerun
    sent with none dropped every widget's value and binding, and the view could not be set."""
    from urllib.parse import urlencode

    from streamlit.proto.ClientState_pb2 import ClientState

    state = session._session_state
    asked = ClientState()
    asked.CopyFrom(session._client_state)
    try:
        asked.query_string = urlencode(state.query_params._query_params, doseq=True)
        del asked.widget_states.widgets[:]
        asked.widget_states.widgets.extend(state.get_widget_states())
    except RuntimeError:  # the session's running page changed its state while it was read: ring it again
        log.warning("class bell: session state changed while read; rung again")
        bell().ring_again(session.id)
        return
    session.request_rerun(asked)


def widget_values(query: dict[str, str], keys: set[str]) -> dict:
    """The values the URL-bound widgets ``keys`` of this page take from ``query`` (their default when absent), read
    with each widget's own parser and deserializer, as Streamlit reads a link. Keys of widgets not on this page are
    left to the link (``st.switch_page(..., query_params=...)``); values a widget refuses are left out."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    from streamlit.runtime.state.query_params import parse_url_param

    state = get_script_run_ctx().session_state._state  # Streamlit 1.67's bindings: pinned in requirements.txt
    values = {}
    for key in keys:
        binding = state.query_params.get_binding_for_param(key)
        meta = binding and state._new_widget_state.widget_metadata.get(binding.widget_id)
        if meta is None:
            continue
        raw = query.get(key)
        try:
            values[key] = meta.deserializer(None if raw is None else parse_url_param(raw, meta.value_type))
        except Exception:  # noqa: BLE001 - the widget refuses it, as it would refuse the link
            log.info("class view: %s=%r refused by its widget", key, raw)
    return values


# --- predict, then reveal ----------------------------------------------------------------------------------------
def question_form_ui() -> None:
    """The teacher's question: open one, lock, reveal."""
    q = room().question()
    with st.form("class_question", clear_on_submit=True, border=False):
        asked = st.text_input("Question for the class", key="class_q_text", max_chars=classroom.MAX_TEXT,
                              placeholder="After 300 steps, which ends with the lower training loss?")
        answers = st.text_area("Answers, one a line", key="class_q_answers", height=80,
                               max_chars=classroom.MAX_ANSWERS * (classroom.MAX_TEXT + 1),
                               placeholder="plain-20\nplain-56")
        if st.form_submit_button("Ask the class"):
            try:
                room().ask(asked, answers.splitlines())
                _question_changed()
                st.rerun()
            except classroom.ClassError as e:
                st.error(str(e))
    if q is not None:
        c1, c2, c3 = st.columns(3)
        c1.button("Lock", key="class_lock", on_click=_changing(room().lock), disabled=q.locked)
        c2.button("Reveal", key="class_reveal", on_click=_changing(room().reveal), disabled=q.revealed)
        c3.button("Close", key="class_close", on_click=_changing(room().close))


def _changing(action):
    """``action`` (a change of the question), then this process's sessions read the question afresh."""
    return lambda: (action(), _question_changed())


def lock_votes() -> None:
    """The teacher started the experiment: no more votes, on the server, for every session and every reload (pages
    call this where the teacher's run starts: the race's Start; any page where a question fits). A student's Start
    locks nothing."""
    if is_teacher():
        room().lock()
        _question_changed()


def prediction_beside(measured: str) -> None:
    """After the experiment: what was measured, and beside it what the class predicted. Draws nothing while no
    question is open or no teacher can lead. The tally shows once revealed; the teacher reveals it here with one
    click, a student is told it comes when the teacher reveals it."""
    q = class_question() if classroom.teacher_key_set() else None
    if q is None:
        return
    st.markdown(f"**Measured:** {text.md(measured)}")
    st.markdown(f"**The class predicted** ({text.md(q.text, classroom.MAX_TEXT)}):")
    if q.revealed:
        tally_ui(q, q.votes.get(classroom.member(session_id())))
    elif is_teacher():
        st.button(f"Show the class's prediction ({len(q.votes)} votes)", key="class_reveal_beside",
                  on_click=_changing(room().reveal))
    else:
        st.caption("The tally shows when the teacher reveals it.")


@ui.timed_fragment(run_every=2.0)
def vote_ui() -> None:
    """The open question: this student's vote until the lock; the tally once the teacher reveals it."""
    q = class_question()
    refused = st.session_state.pop("_class_vote_refused", None)  # a press the class state refused (after the lock)
    if q is None:
        return
    st.markdown(f"**Predict:** {text.md(q.text, classroom.MAX_TEXT)}")
    mine = q.votes.get(classroom.member(session_id()))  # the question just read: one read of the class state a run
    if q.revealed:
        tally_ui(q, mine)
        return
    if is_teacher():
        st.caption(f"{len(q.votes)} votes in; the tally stays hidden until you reveal it."
                   + (" Votes are locked." if q.locked else ""))
        return
    if q.locked:
        st.caption("Votes are locked: the experiment has started." +
                   (f" Your vote: {text.md(q.answers[mine])}." if mine is not None else " You did not vote."))
        return
    choice = st.radio("Your prediction", range(len(q.answers)), index=mine, key=f"class_vote_{q.id}",
                      format_func=lambda i: q.answers[i], label_visibility="collapsed")
    # a callback, not `if st.button(...)`: the press may come in a whole page's run (a fragment's rerun folded into
    # the server's rerun of a follower), where a rerun of the fragment alone cannot be asked for
    st.button("Vote", key=f"class_vote_go_{q.id}", disabled=choice is None, on_click=_vote, args=(q.id,))
    if refused:
        st.error(refused)
    if mine is not None:
        st.caption(f"Your vote: {text.md(q.answers[mine])} (you can change it until the teacher starts).")


def _vote(question_id: int) -> None:
    """The Vote button's callback: this session's choice into the class state, before the run that shows it."""
    try:
        room().vote(session_id(), question_id, st.session_state.get(f"class_vote_{question_id}"))
        _question_changed()
    except (classroom.ClassError, TypeError) as e:  # locked, another question; TypeError: no answer chosen
        st.session_state["_class_vote_refused"] = str(e) if isinstance(e, classroom.ClassError) else "Choose one."


def tally_ui(q: classroom.Question, mine: int | None = None) -> None:
    total = max(1, len(q.votes))
    for i, (answer, n) in enumerate(zip(q.answers, q.tally)):
        st.progress(n / total, text=f"{text.md(answer)}: {n} of {len(q.votes)}" + (" (you)" if i == mine else ""))
