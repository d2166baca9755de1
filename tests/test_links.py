"""Every view is a link, and a link is untrusted input: a page opened with its settings in the URL shows them; hundreds
of random and hostile query strings on a real server give no exception box, and cannot build what the sidebar would
refuse (issue 21, "Every view is a link")."""
from __future__ import annotations

import random
import re
from urllib.parse import urlencode

import pytest

from helpers import PAGES
from resviz.lessons import page_texts
from resviz.tools.server import start_server, stop_server
from resviz.tools.session import Session

pytestmark = pytest.mark.browser  # a real server (no Chromium needed, but the same kind of test)
SIDEBAR = ("sel_family", "sel_cifar", "sel_imagenet", "sel_block", "sel_layers", "sel_width", "sel_stem", "sel_size",
           "sel_in_ch", "sel_classes", "sel_norm", "sel_shortcut", "sel_plain", "sel_device", "projector")
HOSTILE = ("nan", "inf", "-inf", "1e308", "-1", "99999999999999999999", "", "0x10", "true", "None", "[1, 2]",
           "<script>alert(1)</script>", '<a href="http://evil.example/">x</a>', "$\\Huge X$", "%00", "\x00",
           "é" * 50, "9" * 5000, "Custom", "ImageNet", "resnet152", "bottleneck", "2, 2, 2", "999, 999, 999",
           "1024", "512", "10000", "C", "cuda", "mps", "false", "1", "0", "0.5", "deep", "shallow")


def bound_keys(page: str) -> list[str]:
    """The widget keys a page binds to its URL, read from the page file itself (one source: the page)."""
    source = (PAGES / f"{page or 'home'}.py").read_text()
    return re.findall(r'key="(\w+)",\s*bind="query-params"', source)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, url = start_server(log_path=tmp_path_factory.mktemp("server") / "streamlit.log",
                             env={"RESVIZ_WARM_UP": "0", "RESVIZ_CACHE": str(tmp_path_factory.mktemp("cache"))})
    try:
        yield proc, url
    finally:
        stop_server(proc)


def test_every_lesson_binds_its_settings_to_the_url():
    unbound = [p for p in page_texts() if p and not bound_keys(p)]
    assert unbound == [], f"pages whose settings are not in their link: {unbound}"


def test_a_link_opens_its_settings(server):
    _, url = server
    with Session(url) as s:
        r = s.run("paths", query_string="pa_exact=false&pa_samples=5&sel_cifar=resnet32")
    assert r.ok, r.exceptions
    assert any("resnet32" in t for t in r.texts) or "pa_samples" in r.keys


def test_hostile_links_never_show_an_exception_box(server):
    proc, url = server
    rng = random.Random(0)
    pages = list(page_texts())
    failures = []
    for i in range(200):
        page = pages[i % len(pages)]
        keys = bound_keys(page) + list(SIDEBAR) + ["unknown_key", "embed", "embed_options"]
        chosen = rng.sample(keys, k=min(len(keys), rng.randint(1, 6)))
        query = urlencode({k: rng.choice(HOSTILE) for k in chosen})
        with Session(url, timeout=180) as s:
            r = s.run(page, query_string=query)
        if not r.ok or r.exceptions:
            failures.append((page, query[:200], r.status, r.exceptions[:1]))
        assert proc.poll() is None, "the server died"
    assert failures == []


def test_a_link_cannot_build_what_the_sidebar_refuses(server):
    _, url = server
    huge = urlencode({"sel_family": "Custom", "sel_layers": "99, 99, 99, 99", "sel_width": 512, "sel_size": 1024,
                      "sel_block": "bottleneck"})
    with Session(url) as s:
        r = s.run("architecture", query_string=huge)
    assert r.ok, r.exceptions
    assert any("Keeping the previous model" in e for e in r.errors), r.errors
    assert any("resnet20" in t for t in r.texts), "the previous (default) model is still the one shown"
