"""The class in the app: Streamlit glue over ``resviz.classroom`` (``resviz.ui*`` are the only streamlit importers).

- Every view is a link: pages bind their widgets to the URL (``bind="query-params"``); ``share_ui`` shows the link and
  a QR code made offline (segno).
- The teacher leads: the teacher unlocks presenter controls with the server's key (``RESVIZ_TEACHER_KEY``); while
  they lead, every following student is moved to the teacher's page and settings within a second or two, and can
  step away and rejoin.
- Predict, then reveal: the teacher asks a question, students vote in the sidebar, votes lock when the teacher starts
  the run, the tally shows when the teacher reveals it.
- The lesson arc: Previous / Next through the lessons in the order of ``resviz.lessons.LESSONS``.
"""
from __future__ import annotations

import functools
import io
import logging
import socket
import time
from urllib.parse import urlencode, urlsplit

import streamlit as st

from resviz import classroom
from resviz.inputs import text
from resviz.lessons import LESSONS

log = logging.getLogger("resviz")
FOLLOW_EVERY_S = 1.0  # how often a following page looks for the teacher's view (within 2 s of a change)
CHECK_IN_EVERY_S = 3.0  # how often a page says it is here (the roster forgets it after classroom.HERE_S)
MAX_KEY_TRIES = 5  # wrong teacher keys one session may try before the field is refused
ARC = ("", *(lesson.name for lesson in LESSONS))  # home, then the lessons in their teaching order (URL paths)


def room() -> classroom.Classroom:
    return classroom.Classroom()


def session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def is_teacher() -> bool:
    return bool(st.session_state.get("class_teacher")) and classroom.teacher_key_set()


def apply_pending() -> None:
    """The teacher's settings a follower's page fetched, set before any widget of this run is drawn (app.py)."""
    for key, value in st.session_state.pop("_class_pending", {}).items():
        st.session_state[key] = value


def class_ui(page) -> None:
    """The sidebar's class controls for ``page`` (app.py, before the page runs)."""
    with st.sidebar:
        arc_ui(page.url_path)
        share_ui(page.url_path)
        if not classroom.teacher_key_set():  # no teacher can lead this server: nothing to follow or vote on,
            return  # and no page polls for it
        teacher_ui()
        present(page)
        _follow_ui(page.url_path)
        vote_ui()


def present(page) -> None:
    """A leading teacher's page and settings become the class's view: at the start of each of the teacher's runs
    (a new page is known at once) and at its end (Streamlit writes a changed setting into the URL when the widget
    is drawn)."""
    if is_teacher() and st.session_state.get("class_lead"):
        room().present(page.url_path, st.query_params.to_dict())


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
def qr_png(link: str) -> bytes:
    """A QR code of ``link`` as PNG bytes (segno: pure Python, offline)."""
    import segno

    out = io.BytesIO()
    segno.make(link, error="m").save(out, kind="png", scale=6, border=2)
    return out.getvalue()


def share_ui(url_path: str) -> None:
    link = view_link(url_path, st.query_params.to_dict())
    with st.popover("Share this view", icon=":material/qr_code_2:", width="stretch"):
        st.caption("Opens this page with these settings (model, seeds, steps): the same shared results.")
        st.code(link, language=None, wrap_lines=True)
        st.image(qr_png(link), width=240)


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
    st.text_input("Teacher key", type="password", key="class_key", max_chars=200,
                  help="Set by the teacher when the server starts (RESVIZ_TEACHER_KEY).")
    st.button("Unlock presenter controls", key="class_unlock", on_click=_check_key)
    if st.session_state.get("class_key_refused"):
        st.error("That is not the teacher key.")


def _check_key() -> None:
    ss = st.session_state
    candidate, ss["class_key"] = ss.get("class_key", ""), ""  # the key never stays in the session's widgets
    ok = classroom.is_teacher_key(candidate)
    ss["class_teacher"], ss["class_key_refused"] = ok, not ok
    ss["class_key_tries"] = 0 if ok else ss.get("class_key_tries", 0) + 1


@st.fragment(run_every=2.0)
def _roster_ui() -> None:
    from resviz import runs

    r = room().roster()
    states = [status.state.value for _, status in runs.registry().overview()]
    st.caption(f"**{r.students}** students here, **{r.following}** following you · races: "
               f"{states.count('running')} running, {states.count('queued')} queued")


# --- following -------------------------------------------------------------------------------------------------
@st.fragment(run_every=FOLLOW_EVERY_S)
def _follow_ui(current: str) -> None:
    """Say this session is here; while the teacher leads and this student follows, go where the teacher is."""
    ss = st.session_state
    following = ss.setdefault("class_following", True)
    teacher = is_teacher()
    if time.monotonic() - ss.get("_class_checked_in", 0.0) > CHECK_IN_EVERY_S:
        room().check_in(session_id(), following and not teacher, teacher)
        if teacher and ss.get("class_lead"):
            room().still_presenting()
        ss["_class_checked_in"] = time.monotonic()
    view = None if teacher else room().view()
    if view is None:
        return
    if not following:
        st.button("Rejoin the class", key="class_rejoin", icon=":material/group:", type="primary",
                  on_click=lambda: ss.update(class_following=True, _class_applied=None))
        return
    st.caption("Following the teacher's screen.")
    st.button("Step away to explore", key="class_step_away", on_click=lambda: ss.update(class_following=False))
    if ss.get("_class_applied") != view.version:
        ss["_class_applied"] = view.version
        go_to(view, current)


def go_to(view: classroom.View, current: str) -> None:
    """Show ``view`` in this session: its settings into the bound widgets, then its page (or a rerun of this one)."""
    if view.page not in ARC:
        return  # an unknown page: nothing to follow
    # set on the next run, before the widgets are drawn: Streamlit writes a value set in that same run into the URL
    st.session_state["_class_pending"] = widget_values(view.query, set(st.query_params.keys()) | set(view.query))
    if view.page == current:
        st.rerun(scope="app")
    from resviz import ui

    st.switch_page(_page_file(view.page), query_params=ui.unbound_query(view.query))


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
                st.rerun()
            except classroom.ClassError as e:
                st.error(str(e))
    if q is not None:
        c1, c2, c3 = st.columns(3)
        c1.button("Lock", key="class_lock", on_click=lambda: room().lock(), disabled=q.locked)
        c2.button("Reveal", key="class_reveal", on_click=lambda: room().reveal(), disabled=q.revealed)
        c3.button("Close", key="class_close", on_click=lambda: room().close())


def lock_votes() -> None:
    """The teacher started the experiment: no more votes (pages call this where the run starts)."""
    if is_teacher():
        room().lock()


@st.fragment(run_every=2.0)
def vote_ui() -> None:
    """The open question: this student's vote until the lock; the tally once the teacher reveals it."""
    q = room().question()
    if q is None:
        return
    st.markdown(f"**Predict:** {text.md(q.text, classroom.MAX_TEXT)}")
    mine = room().my_vote(session_id())
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
    if st.button("Vote", key=f"class_vote_go_{q.id}", disabled=choice is None):
        try:
            room().vote(session_id(), q.id, choice)
            st.rerun(scope="fragment")
        except classroom.ClassError as e:
            st.error(str(e))
    if mine is not None:
        st.caption(f"Your vote: {text.md(q.answers[mine])} (you can change it until the teacher starts).")


def tally_ui(q: classroom.Question, mine: int | None = None) -> None:
    total = max(1, len(q.votes))
    for i, (answer, n) in enumerate(zip(q.answers, q.tally)):
        st.progress(n / total, text=f"{text.md(answer)}: {n} of {len(q.votes)}" + (" (you)" if i == mine else ""))
