"""resviz.tools.load_pages: what counts as a page's content, the figures, and 3 sessions against the real app."""
import json
import time

from streamlit.proto.Element_pb2 import Element

from resviz.lessons import page_texts
from resviz.tools import load_pages
from resviz.tools.load_pages import CONTENT, Content, is_content


def _element(kind: str, key: str | None = None) -> Element:
    el = Element()
    proto = getattr(el, kind)
    if key is not None:
        proto.id = f"$$ID-0123abcd-{key}"
    else:
        proto.SetInParent()
    return el


def test_every_page_names_its_content():
    assert set(CONTENT) == set(page_texts())


def test_only_the_main_columns_figure_counts_never_the_sidebar_controls_or_a_progress_bar():
    graph = CONTENT["architecture"]
    assert is_content(_element("plotly_chart", "arch_graph"), [0, 3, 1], graph)
    assert not is_content(_element("plotly_chart", "arch_graph"), [1, 0], graph)  # the sidebar
    assert not is_content(_element("plotly_chart", "other_chart"), [0, 3], graph)
    assert not is_content(_element("progress"), [0, 2], graph)
    assert not is_content(_element("button_group", "arch_expand"), [0, 2], graph)
    picture = CONTENT[""]  # home: the first image of the main column; every page's sidebar has one too
    assert is_content(_element("imgs"), [0, 1], picture)
    assert not is_content(_element("imgs"), [1, 0], picture)


def test_figures_per_page_and_overall():
    records = [{**load_pages.new_record(p), "content_s": t, "first_run_s": 0.1}
               for p, t in (("", 1.0), ("", 3.0), ("lesion", 2.0), ("lesion", None))]
    s = load_pages.summarize(records)
    assert (s["overall"]["n"], s["overall"]["p50"], s["overall"]["max"], s["no_content"]) == (3, 2.0, 3.0, 1)
    assert s["per_page"]["lesion"]["n"] == 1 and s["per_page"]["lesion"]["sessions"] == 2
    assert s["per_page"][""]["p95"] == 1.0 + 2.0 * 0.95
    assert "| lesion | the lesion chart | 1 / 2 | 2.00 / 2.00 / 2.00 | 0.10 |" in load_pages.format_table(s)


def test_three_sessions_are_timed_to_their_pages_content_on_the_real_app(app_server, tmp_path):
    out = tmp_path / "load_pages.json"
    pages = ",architecture,shortcut_lab"
    assert load_pages.main(["--url", app_server, "--sessions", "3", "--pages", pages, "--ramp", "0.5",
                            "--timeout", "60", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["page"] for r in data["sessions"]] == ["", "architecture", "shortcut_lab"]
    assert all(r["status"] == "content" and 0 < r["content_s"] < 60 for r in data["sessions"]), data["sessions"]
    assert [r["status"] for r in data["warm"]] == ["content"] * 3  # the first visits, before the class
    o = data["summary"]["overall"]
    assert o["n"] == 3 and o["p50"] <= o["p95"] <= o["max"]


def test_a_page_whose_content_never_comes_is_counted_without_waiting_for_the_timeout(app_server, tmp_path,
                                                                                     monkeypatch):
    # the race page reruns its race fragment every second: a client that followed it blindly would wait it out
    monkeypatch.setitem(CONTENT, "training", Content("plotly_chart", "no_such_chart", "a chart it never draws"))
    out = tmp_path / "load_pages.json"
    t = time.monotonic()
    assert load_pages.main(["--url", app_server, "--sessions", "1", "--pages", "training", "--no-warm",
                            "--timeout", "45", "--json", str(out)]) == 1
    assert time.monotonic() - t < 30  # no progress bar and no content: nothing is coming
    rec = json.loads(out.read_text())["sessions"][0]
    assert rec["content_s"] is None and rec["status"].startswith("no content") and rec["first_run_s"] > 0
