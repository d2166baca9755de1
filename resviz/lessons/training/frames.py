"""What one student sees of a shared race: the message instead of the charts (before Start, queued, failed), their
own history folded from the shared records, and the frames a live race is drawn in."""
from __future__ import annotations

from dataclasses import dataclass

from resviz import runs
from resviz.lessons.training import replay
from resviz.lessons.training.history import RaceHistory, new_history_like
from resviz.lessons.training.jobs import RaceHeader
from resviz.lessons.training.verdicts import Tone, race_messages


def waiting_message(snap: runs.Snapshot | None, max_running: int) -> tuple[Tone, str] | None:
    """What a student reads instead of the charts (before Start, in the queue, after a failure, while the networks
    are built); None once there is a step to draw."""
    if snap is None:
        return Tone.INFO, ("Choose the networks and settings, then press **Start**. Charts update live; **Stop** "
                           "keeps what was learned so far.")
    s = snap.status
    if s.state is runs.State.QUEUED:
        return Tone.INFO, queue_text(s.position, s.wait_s, max_running)
    if s.state is runs.State.FAILED:
        return Tone.ERROR, f"The race failed: {s.error}"
    return (Tone.INFO, "Building the networks…") if not snap.records else None


@dataclass
class RaceView:
    """One student's view of a shared race: the header and their own history, folded from the shared records."""
    header: RaceHeader
    history: RaceHistory
    seen: int = 1  # records folded, the header included

    def messages(self, live: bool = False) -> list[tuple[Tone, str]]:
        """What the race showed, in words (``race_messages``; ``live``: divergences only)."""
        return race_messages(self.history, self.header.context, live)

    @property
    def figure_key(self) -> tuple:
        """What its charts show: the same for every student at this step of this race (a shared figure cache's key)."""
        return ("race figures", self.header.key, self.history.step)


FRAMES = 60  # a live race is drawn in at most this many frames (one every few steps)


def framed(records, live: bool):
    """The records up to the last whole frame of a live race (all of them otherwise): the students watching one
    race poll at different moments, and a frame they share is one set of charts built for the class (by step,
    thirty watchers each saw a step of their own and the server built thirty sets a second)."""
    if not live or len(records) < 2:
        return records
    every = max(1, records[0].empty.steps // FRAMES)
    return records[:max(2, 1 + (len(records) - 1) // every * every)]


def fold(view: RaceView | None, records) -> RaceView | None:
    """``view`` with the records it has not seen added (a new view from the header if None; None before it)."""
    if view is None:
        if not records:
            return None
        header = records[0]
        view = RaceView(header, new_history_like(header.empty))
    for rec in records[view.seen:]:
        view.history.add(rec)
    view.seen = max(view.seen, len(records))
    return view


def queue_text(position: int, wait_s: float | None, max_running: int) -> str:
    """What a student whose race waits in the server's queue reads."""
    wait = f"; it should start in about {wait_s:.0f} s (from the pace of the races before it)" if wait_s else ""
    return (f"Number {position} in the queue: this server trains {max_running} race(s) at once{wait}. Students who "
            "press Start with the same settings share one race.")


def replay_view(kept: replay.Replay) -> RaceView:
    """A finished race read back from the disk cache, as a view the page draws like any other."""
    header = RaceHeader(new_history_like(kept.history), kept.notes, kept.accuracy_note, kept.chance, kept.context,
                        kept.file_name, key=("replayed race", kept.key, kept.trained_on))
    return RaceView(header, kept.history)
