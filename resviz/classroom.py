"""The class as one thing: the teacher's key, the view the teacher presents, who is here and who follows, and the
class's vote before an experiment. Kept where every server process behind the proxy reads and writes the same class
(``resviz.class_store``): on the Dask scheduler when ``RESVIZ_SCHEDULER`` is set (every host), else in the shared
disk cache (``resviz.disk_cache``, SQLite underneath: the processes of one host); values are JSON, never pickles.

No names are kept: a student is a one-way hash of their browser session's id, and only while they are connected.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from dataclasses import asdict, dataclass, field

from resviz import class_store

KEY_ENV = "RESVIZ_TEACHER_KEY"  # the server's teacher key; unset: nobody can present, the app works as before
HERE_S = 10.0  # a session not seen for this long has left (a follower's page checks in every second or two)
PRESENTING_S = 60.0  # a teacher's page not heard from for this long stops leading (a long computation on the
# teacher's page holds its check-ins back, so this is longer than HERE_S)
MAX_ANSWERS = 6
MAX_TEXT = 200  # characters of a question or an answer: the teacher's text, but shown on thirty screens


def teacher_key_set() -> bool:
    return bool(os.environ.get(KEY_ENV))


def is_teacher_key(candidate: str | None) -> bool:
    """Whether ``candidate`` is the server's teacher key, compared in constant time; never true with no key set."""
    key = os.environ.get(KEY_ENV, "")
    return bool(key) and hmac.compare_digest(str(candidate or "").encode(), key.encode())


def member(session_id: str) -> str:
    """The name the class state keeps for a session: a one-way hash, not the session's id."""
    return hashlib.sha256(f"resviz-class|{session_id}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class View:
    """What the teacher presents: a page (its URL path) and its settings (URL query parameters), numbered."""
    page: str
    params: tuple[tuple[str, str], ...] = ()
    version: int = 0
    at: float = 0.0  # when the teacher last said they still present (a closed teacher tab stops leading)

    @property
    def query(self) -> dict[str, str]:
        return dict(self.params)


@dataclass(frozen=True)
class Question:
    """A question put to the class before an experiment; votes lock when the run starts, the tally shows on reveal."""
    id: int
    text: str
    answers: tuple[str, ...]
    page: str = ""
    locked: bool = False
    revealed: bool = False
    votes: dict[str, int] = field(default_factory=dict)  # member -> answer index

    @property
    def tally(self) -> list[int]:
        counts = [0] * len(self.answers)
        for choice in self.votes.values():
            counts[choice] += 1
        return counts


@dataclass(frozen=True)
class Roster:
    """Who is here now: students (the teacher not counted), how many follow the teacher, whether a teacher is in."""
    students: int
    following: int
    teacher: bool


class ClassError(ValueError):
    """A class action that cannot be done (a vote after the lock, a question without answers); says why."""


class Classroom:
    """The class state of one server (all its processes, on every host), under ``name`` in ``store`` (default:
    ``class_store.store()``, the scheduler's or the disk cache; anything with get, set, delete and transact)."""

    def __init__(self, name: str = "class", store=None):
        self.store = store if store is not None else class_store.store()
        self.name = name

    def _get(self, what: str):
        raw = self.store.get(f"{self.name}:{what}")
        return None if raw is None else json.loads(raw)

    def _set(self, what: str, value) -> None:
        self.store.set(f"{self.name}:{what}", json.dumps(value))

    # --- presenting ---
    def present(self, page: str, params: dict[str, str], now: float | None = None) -> View:
        """The teacher's view becomes the class's (callers check the teacher's key first); the same view again
        only says the teacher is still presenting."""
        now = time.time() if now is None else now
        with self.store.transact():
            old = self.view(now=-1.0)
            params = tuple(sorted((str(k), str(v)) for k, v in params.items()))
            same = old is not None and (old.page, old.params) == (page, params)
            view = View(page, params, old.version if same else self.view_version() + 1, now)
            self._set("view", asdict(view))
            self._set("view_version", view.version)
        return view

    def view_version(self) -> int:
        """The number of the class's latest view (a new view or the end of presenting counts one): what a follower
        reads every check, one small value, before it reads the view itself. Never goes back, so a follower that
        saw lesson 1's views does not take the next lesson's first view for one it has shown."""
        return self._get("view_version") or 0

    def still_presenting(self, now: float | None = None) -> None:
        """The teacher's page says it is still open (every few seconds while leading)."""
        with self.store.transact():
            old = self.view(now=-1.0)
            if old is not None:
                self._set("view", asdict(View(old.page, old.params, old.version, time.time() if now is None else now)))

    def view(self, now: float | None = None) -> View | None:
        """The view the class follows; None when nobody presents, or the teacher's page has not said it is still
        open for ``PRESENTING_S`` (``now=-1``: whatever is stored)."""
        got = self._get("view")
        if got is None:
            return None
        view = View(got["page"], tuple(tuple(p) for p in got["params"]), got["version"], got.get("at", 0.0))
        now = time.time() if now is None else now
        return view if now < 0 or now - view.at < PRESENTING_S else None

    def stop_presenting(self) -> None:
        with self.store.transact():
            if self._get("view") is not None:
                self.store.delete(f"{self.name}:view")
                self._set("view_version", self.view_version() + 1)  # followers hear that the lead is over

    # --- who is here ---
    def check_in(self, session_id: str, following: bool, teacher: bool = False, now: float | None = None) -> None:
        """A session says it is here (and whether it follows); sessions not seen for ``HERE_S`` have left."""
        now = time.time() if now is None else now
        with self.store.transact():
            seen = {m: s for m, s in (self._get("seen") or {}).items() if now - s[0] < HERE_S}
            seen[member(session_id)] = [now, bool(following), bool(teacher)]
            self._set("seen", seen)

    def roster(self, now: float | None = None) -> Roster:
        now = time.time() if now is None else now
        here = [s for s in (self._get("seen") or {}).values() if now - s[0] < HERE_S]
        students = [s for s in here if not s[2]]
        return Roster(len(students), sum(1 for s in students if s[1]), any(s[2] for s in here))

    # --- predict, then reveal ---
    def ask(self, text: str, answers: list[str], page: str = "") -> Question:
        """Open a new question (the old one closes); answers are the teacher's, at most ``MAX_ANSWERS``."""
        answers = [a.strip()[:MAX_TEXT] for a in answers if a.strip()][:MAX_ANSWERS]
        if not text.strip() or len(answers) < 2:
            raise ClassError("A question needs its text and at least two answers.")
        with self.store.transact():
            old = self.question()
            q = Question((old.id + 1) if old else 1, text.strip()[:MAX_TEXT], tuple(answers), page)
            self._save(q)
        return q

    def question(self) -> Question | None:
        got = self._get("question")
        if got is None:
            return None
        return Question(got["id"], got["text"], tuple(got["answers"]), got["page"], got["locked"], got["revealed"],
                        got["votes"])

    def vote(self, voter: str, question_id: int, choice: int) -> Question:
        """This session's vote (it may change its mind until the lock); refused once locked or for another question."""
        with self.store.transact():
            q = self.question()
            if q is None or q.id != question_id:
                raise ClassError("That question is closed: the teacher has asked another one.")
            if q.locked:
                raise ClassError("Votes are locked: the experiment has started.")
            if not 0 <= int(choice) < len(q.answers):
                raise ClassError("That is not one of the answers.")
            q = Question(**{**asdict(q), "answers": q.answers, "votes": {**q.votes, member(voter): int(choice)}})
            self._save(q)
        return q

    def my_vote(self, voter: str) -> int | None:
        q = self.question()
        return None if q is None else q.votes.get(member(voter))

    def lock(self) -> Question | None:
        """No more votes (called when the teacher starts the run)."""
        return self._update(locked=True)

    def reveal(self) -> Question | None:
        """Show the tally to the class (locks too: a vote after seeing the tally is no prediction)."""
        return self._update(locked=True, revealed=True)

    def close(self) -> None:
        self.store.delete(f"{self.name}:question")

    def _update(self, **changes) -> Question | None:
        with self.store.transact():
            q = self.question()
            if q is not None:
                q = Question(**{**asdict(q), "answers": q.answers, **changes})
                self._save(q)
        return q

    def _save(self, q: Question) -> None:
        self._set("question", {**asdict(q), "answers": list(q.answers)})
