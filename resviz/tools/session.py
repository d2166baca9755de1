"""One student's browser tab without a browser: Streamlit's websocket protocol, spoken the way the frontend does.

``Session`` connects to ``/_stcore/stream`` (subprotocol ``streamlit``) and sends a ``BackMsg.rerun_script``
carrying the page (``page_name`` = the URL path, as the frontend sends it) and the widget values; it reads
``ForwardMsg``s until ``script_finished``. Widgets are addressed by their ``key=``, as in the pages::

    with Session(url) as s:
        s.run("training")                                # open the page: its widgets become known
        s.run("training", widgets={"tr_steps": 20}, click="tr_start")

A file uploader's value is the id of a file sent first with ``upload`` (``widgets={"fm_upload": [file_id]}``).
"""
from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.Checkbox_pb2 import Checkbox
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.Slider_pb2 import Slider
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.sync.client import connect

WS_PATH = "/_stcore/stream"
TEXT_ELEMENTS = ("markdown", "heading", "alert")  # what RunResult.texts collects, in page order
# One proto, two widgets: named as the page's call names them.
_STYLES = {("checkbox", Checkbox.TOGGLE): "toggle", ("slider", Slider.SELECT_SLIDER): "select_slider"}


@dataclass
class RunResult:
    """One script run as a client saw it."""
    page: str
    seconds: float = float("nan")  # rerun request sent -> script_finished
    first_element_s: float | None = None  # rerun request sent -> first element of the page
    status: str = "ok"  # ok | compile_error | timeout | disconnected
    exceptions: list[str] = field(default_factory=list)  # exception boxes ("Type: message")
    errors: list[str] = field(default_factory=list)  # st.error boxes (friendly messages)
    warnings: list[str] = field(default_factory=list)  # exception elements flagged as warnings
    texts: list[str] = field(default_factory=list)  # markdown, headings and alert boxes, in order
    keys: dict[str, str] = field(default_factory=dict)  # every keyed element drawn: key -> kind ("checkbox", ...)
    page_not_found: bool = False
    elements: int = 0

    @property
    def ok(self) -> bool:
        """Rendered to the end with no exception and no 'page not found'."""
        return self.status == "ok" and not self.exceptions and not self.page_not_found


def widget_key(element_id: str) -> str | None:
    """The ``key=`` a page gave a widget, read back from its element id (``$$ID-<hash>-<key>``)."""
    parts = element_id.split("-", 2)
    return parts[2] if len(parts) == 3 and parts[2] != "None" else None


def _option(proto, value) -> str:
    """The option label the frontend sends for ``value`` (selectbox, radio, select_slider send labels)."""
    label = str(value)
    if label not in proto.options:
        raise ValueError(f"{label!r} is not one of the options {list(proto.options)}")
    return label


def widget_state(kind: str, proto, value: Any) -> WidgetState:
    """The ``WidgetState`` the frontend would send after a student set this widget to ``value``."""
    ws = WidgetState(id=proto.id)
    if kind == "button":
        ws.trigger_value = True
    elif kind in ("checkbox", "toggle"):
        ws.bool_value = bool(value)
    elif kind == "number_input":
        ws.double_value = float(value)
    elif kind == "slider":
        ws.double_array_value.data[:] = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    elif kind in ("selectbox", "radio"):
        ws.string_value = _option(proto, value)
    elif kind == "select_slider":
        ws.string_array_value.data[:] = [_option(proto, value)]
    elif kind in ("text_input", "text_area"):
        ws.string_value = str(value)
    elif kind == "file_uploader":  # the ids ``Session.upload`` returned
        for file_id in value:
            ws.file_uploader_state_value.uploaded_file_info.add(file_id=file_id, name=file_id)
    else:
        raise ValueError(f"setting a {kind} widget is not supported by this client")
    return ws


class Session:
    """One student's browser tab, over the websocket: ``run(page)`` renders a page and returns a ``RunResult``.

    The connection stays open between runs (``heartbeat()`` keeps it alive like the frontend does), so the
    server keeps this session's state until ``close()``. Widget values set with ``run(widgets=...)`` are sent
    again with every later run, as the frontend does; a ``click`` is sent once.
    """

    def __init__(self, base_url: str, timeout: float = 120):
        self.timeout = timeout
        self.base_url = base_url.rstrip("/")
        self.session_id = ""  # the server's id for this tab (its upload URLs name it), known after the first run
        self.page_hashes: dict[str, str] = {}  # url path -> page_script_hash, from the navigation message
        self._widgets: dict[str, tuple[str, Any]] = {}  # key -> (kind, proto) drawn by the last run
        self._states: dict[str, WidgetState] = {}  # element id -> the value this student set
        ws_url = base_url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/") + WS_PATH
        self._ws = connect(ws_url, subprotocols=["streamlit"], max_size=None, open_timeout=timeout,
                           legacy=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._ws.close()

    def _send(self, build) -> None:
        msg = BackMsg()
        build(msg)
        self._ws.send(msg.SerializeToString())

    def _recv(self, timeout: float | None):
        msg = ForwardMsg()
        msg.ParseFromString(self._ws.recv(timeout=timeout))
        return msg

    def drain(self) -> int:
        """Read whatever the server sent since the last run; returns how many messages."""
        n = 0
        while True:
            try:
                self._recv(timeout=0)
            except TimeoutError:
                return n
            n += 1

    def heartbeat(self) -> float:
        """Send the frontend's app heartbeat and wait for the ack; returns the round trip in seconds."""
        self.drain()
        t = time.perf_counter()
        self._send(lambda m: setattr(m, "app_heartbeat", True))
        while not self._recv(self.timeout).heartbeat_ack:
            pass
        return time.perf_counter() - t

    def upload(self, name: str, data: bytes) -> tuple[int, str]:
        """Send a file to the server's upload route for this session, as a browser does before its file uploader
        names it; returns (HTTP status: 204 stored, 413 refused, ...; the file's id)."""
        with urllib.request.urlopen(self.base_url + "/_stcore/health", timeout=self.timeout) as r:
            cookie = r.headers.get("Set-Cookie", "").split(";")[0]  # _streamlit_xsrf=<token>
        file_id, boundary = str(uuid.uuid4()), uuid.uuid4().hex
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(
            f"{self.base_url}/_stcore/upload_file/{self.session_id}/{file_id}", data=body, method="PUT",
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "Cookie": cookie,
                     "X-Xsrftoken": cookie.partition("=")[2]})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, file_id
        except urllib.error.HTTPError as e:
            return e.code, file_id

    def _widget_states(self, widgets: dict[str, Any], click: str | None) -> list[WidgetState]:
        """What to send: every value set so far (updated by ``widgets``), plus the click."""
        unknown = [k for k in [*widgets, *([click] if click else [])] if k not in self._widgets]
        if unknown:
            raise KeyError(f"no widget with key {unknown} on the page (known: {sorted(self._widgets)})")
        for key, value in widgets.items():
            kind, proto = self._widgets[key]
            self._states[proto.id] = widget_state(kind, proto, value)
        out = list(self._states.values())
        if click:
            kind, proto = self._widgets[click]
            out.append(widget_state(kind, proto, True))
        return out

    def run(self, page: str = "", query_string: str = "", widgets: dict[str, Any] | None = None,
            click: str | None = None) -> RunResult:
        """Rerun the script for the page at URL path ``page`` ("" = home).

        ``widgets`` sets widgets by key and ``click`` presses a button by key; both must have been drawn by
        this session's previous run (open the page first).
        """
        res = RunResult(page=page)
        states = self._widget_states(widgets or {}, click)
        try:
            self.drain()
        except Exception:  # noqa: BLE001 - a dead connection is reported as a result, not raised
            res.status = "disconnected"
            return res

        def build(m):
            m.rerun_script.page_name = page
            m.rerun_script.page_script_hash = self.page_hashes.get(page, "")
            m.rerun_script.query_string = query_string
            m.rerun_script.widget_states.widgets.extend(states)

        t = time.perf_counter()
        deadline = t + self.timeout
        try:
            self._send(build)
            while True:
                msg = self._recv(max(0.0, deadline - time.perf_counter()))
                if self._read(msg, res, t):
                    break
        except TimeoutError:
            res.status = "timeout"
        except Exception:  # noqa: BLE001 - ConnectionClosed and friends
            res.status = "disconnected"
        res.seconds = time.perf_counter() - t
        self._widgets = {k: v for k, v in self._widgets.items() if k in res.keys}
        return res

    def _read(self, msg, res: RunResult, t0: float) -> bool:
        """Note one ForwardMsg in ``res``; True once the run is over."""
        kind = msg.WhichOneof("type")
        if kind == "new_session":
            self.session_id = msg.new_session.initialize.session_id
        elif kind == "navigation":
            self.page_hashes.update({p.url_pathname: p.page_script_hash for p in msg.navigation.app_pages})
        elif kind == "page_not_found":
            res.page_not_found = True
        elif kind == "session_event" and msg.session_event.HasField("script_compilation_exception"):
            e = msg.session_event.script_compilation_exception
            res.exceptions.append(f"{e.type}: {e.message}")
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
            self._element(msg.delta.new_element, res, t0)
        elif kind == "script_finished":
            if msg.script_finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                return False  # st.rerun() or a newer request: the run goes on
            if msg.script_finished == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
                res.status = "compile_error"
            return True
        return False

    def _element(self, el, res: RunResult, t0: float) -> None:
        res.elements += 1
        if res.first_element_s is None:
            res.first_element_s = time.perf_counter() - t0
        kind = el.WhichOneof("type")
        proto = getattr(el, kind)
        if kind in ("checkbox", "slider"):
            kind = _STYLES.get((kind, proto.type), kind)
        if kind == "exception":
            text = f"{proto.type}: {proto.message}".strip(": ")
            (res.warnings if proto.is_warning else res.exceptions).append(text)
        elif kind == "alert" and proto.format == Alert.ERROR:
            res.errors.append(proto.body)
        if kind in TEXT_ELEMENTS:
            res.texts.append(proto.body)
        key = widget_key(getattr(proto, "id", "") or "")
        if key:
            res.keys[key] = kind
            self._widgets[key] = (kind, proto)
