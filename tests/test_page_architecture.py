"""Architecture page and app frame: AppTest smoke and interaction tests, and one real-browser visit."""
import pytest

from helpers import (checked_app, figure, new_app, no_exceptions, open_page, page_exceptions, screenshot, visit,
                     wait_idle)


def metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def test_home_page_explains_residual_block():
    at = checked_app()
    assert "F(x) + x" in " ".join(m.value for m in at.markdown)


def test_architecture_defaults_to_resnet20_with_paper_counts():
    at = checked_app("architecture")
    assert metric(at, "Parameters") == "269,722"
    assert metric(at, "Weighted layers") == "20"
    assert any("`layer2.0`: 16×32×32 → 32×16×16" in w.value and "zero-pad, stride 2" in w.value for w in at.warning)
    assert not at.info  # basic blocks: no bottleneck callout


def test_choosing_resnet50_shows_bottleneck_and_projection_callouts():
    at = checked_app("architecture", sidebar={"sel_family": "ImageNet", "sel_imagenet": "resnet50"})
    assert metric(at, "Parameters") == "25,557,032"
    assert metric(at, "Multiply-accumulates") == "4.089 G"  # torchvision's v1.5
    assert metric(at, "Receptive field (theoretical)") == "427 px"  # the last conv's, as published (pooling excluded)
    captions = " ".join(c.value for c in at.caption)
    assert "427 px on this 224 px input" in captions and "give **3.8 G**" in captions
    assert any("in `layer1.1` the first 1x1 conv squeezes 256 channels to 64" in i.value for i in at.info)
    assert any("`layer2.0`: 256×56×56 → 512×28×28" in w.value and "1x1 projection, stride 2" in w.value
               for w in at.warning)


def test_sidebar_puts_the_stride_on_the_first_1x1_as_the_paper_does():
    at = checked_app("architecture", sidebar={"sel_family": "ImageNet", "sel_imagenet": "resnet50",
                                              "sel_stride_in_1x1": True})
    assert metric(at, "Multiply-accumulates") == "3.858 G"  # He et al. Table 1: 3.8 G
    assert metric(at, "Parameters") == "25,557,032"  # same weights, another place for the stride
    assert "Shown: the stride on the first 1x1" in " ".join(c.value for c in at.caption)
    assert at.sidebar.toggle(key="sel_stride_in_1x1").value


def test_option_c_projections_are_labelled_option_c_and_only_reshaping_blocks_are_listed():
    at = checked_app("architecture", sidebar={"sel_family": "Custom", "sel_shortcut": "C"})
    warning = next(w.value for w in at.warning if "cannot be added" in w.value)
    assert warning.count("(option C") == 2 and "`layer1.0`:" not in warning


def test_plain_twin_toggle_removes_shortcuts_and_projection_parameters():
    at = new_app("architecture", sidebar={"sel_family": "ImageNet"})
    at.toggle(key="arch_plain").set_value(True).run()
    no_exceptions(at)
    assert int(metric(at, "Parameters").replace(",", "")) < 25_557_032
    assert not at.warning and any("no shortcuts" in c.value for c in at.caption)


def test_the_sidebars_plain_twin_switch_changes_the_open_page_and_its_figures_name_their_network():
    at = checked_app("architecture", sidebar={"sel_family": "ImageNet", "sel_imagenet": "resnet50"})
    assert not at.toggle(key="arch_plain").value and metric(at, "Parameters") == "25,557,032"
    at.sidebar.toggle(key="sel_plain").set_value(True).run()
    no_exceptions(at)
    assert at.toggle(key="arch_plain").value and int(metric(at, "Parameters").replace(",", "")) < 25_557_032
    assert metric(at, "Multiply-accumulates") == "3.730 G"  # the twin's: no projection shortcuts
    captions = " ".join(c.value for c in at.caption)
    assert "torchvision's resnet50 (\"v1.5\", the stride on the 3x3) has **4.09 G**" in captions
    assert "Its plain twin, shown, has no projection shortcuts" in captions and "`layer4.2.conv3`" in captions
    at.toggle(key="arch_plain").set_value(False).run()  # the page's own switch still works on its own
    assert metric(at, "Parameters") == "25,557,032" and at.sidebar.toggle(key="sel_plain").value
    at.sidebar.toggle(key="sel_plain").set_value(False).run()
    assert not at.toggle(key="arch_plain").value and metric(at, "Parameters") == "25,557,032"


@pytest.mark.parametrize("sidebar,expected", [
    ({}, {"warning": ["**Where x cannot be added as it is:**"]}),  # ResNet-20: zero-padding shortcuts, no bottleneck
    ({"sel_family": "ImageNet", "sel_imagenet": "resnet50"},
     {"info": ["**Bottleneck:** in `layer1.1`"], "warning": ["**Where x cannot be added as it is:**"]}),
    ({"sel_family": "ImageNet", "sel_imagenet": "resnet50", "sel_plain": True}, {"info": ["**Bottleneck:**"]}),
    ({"sel_family": "Custom", "sel_layers": "1, 1, 1, 1, 1, 1", "sel_size": 8},
     {"warning": ["With a 8 px input the feature map is already 1x1", "**Where x cannot be added as it is:**"]}),
])
def test_each_statement_is_in_its_own_box_and_no_other(sidebar, expected):
    """Which box each of the page's statements takes: exact counts, so there is no noise to guard against."""
    at = checked_app("architecture", sidebar=sidebar)
    shown = {kind: [e.value for e in getattr(at, kind)] for kind in ("success", "info", "warning", "error")}
    assert {k for k, v in shown.items() if v} == set(expected)
    for kind, starts in expected.items():
        assert len(shown[kind]) == len(starts) and all(v.startswith(s) for v, s in zip(shown[kind], starts)), shown


def test_a_tiny_input_runs_as_in_pytorch_and_warns_that_strides_do_nothing():
    at = checked_app("architecture",
                     sidebar={"sel_family": "Custom", "sel_layers": "1, 1, 1, 1, 1, 1", "sel_size": 8})
    assert not at.error and metric(at, "Output") == "10"  # PyTorch runs it: 8 -> 4 -> 2 -> 1, then 1x1 stays 1x1
    assert any("already 1x1 when it reaches `layer5.0.conv1`" in w.value and "stride does nothing" in w.value
               for w in at.warning)


def test_unparsable_custom_stages_keep_previous_model():
    at = checked_app(sidebar={"sel_family": "Custom", "sel_layers": "two, 2"})
    assert any("whole numbers" in e.value for e in at.sidebar.error)
    assert at.session_state["selection"].cfg.name == "resnet20"


def test_expand_all_layers_and_the_csv_holds_the_layer_table(monkeypatch):
    import csv
    import io

    import streamlit as st

    offered, real = {}, st.download_button

    def spy(label, data, *args, **kwargs):  # the page's own CSV text, as the button hands it to the browser
        offered[kwargs.get("key")] = data
        return real(label, data, *args, **kwargs)

    monkeypatch.setattr(st, "download_button", spy)
    at = new_app("architecture")
    at.get_by_key("arch_expand").set_value("all").run()
    no_exceptions(at)
    shown = at.dataframe[0].value
    rows = list(csv.DictReader(io.StringIO(offered["arch_csv"])))
    assert [r["name"] for r in rows] == list(shown["name"]) and rows[0]["out_shape"] == "16×32×32"
    assert rows[-1]["name"] == "fc" and int(rows[-1]["params"]) == 64 * 10 + 10
    assert sum(int(r["params"]) for r in rows) == 269_722 and sum(int(r["macs"]) for r in rows) == 40_551_040


# The pages the layout tests open on this server at 1280x720 (tests/layout.py's first_screen checks the heading and
# that no exception box shows, as ``visit`` does): the test below visits every other page.
FIRST_SCREEN_TESTED = ("", "architecture", "shortcut_lab", "signal_flow", "feature_maps",  # test_layout_a.py
                       "lesion", "paths", "shattered", "landscape")  # test_layout_b.py


@pytest.mark.browser
def test_every_page_renders_in_chromium_without_exceptions(app_server, page):
    from resviz.lessons import page_texts

    for path, text in page_texts().items():
        if path not in FIRST_SCREEN_TESTED:
            visit(page, app_server, path, text)


@pytest.mark.browser
def test_browser_graph_draws_the_shortcuts_and_folds_resnet152(app_server, page):
    def legend():
        page.locator("g.legend text.legendtext").first.wait_for()  # plotly has drawn the chart
        return page.locator("g.legend text.legendtext").all_text_contents()

    open_page(page, app_server, "architecture")
    assert page_exceptions(page) == []
    assert {"identity shortcut", "zero-pad shortcut"} <= set(legend())  # ResNet-20, blocks only (the default)
    page.get_by_text("ImageNet", exact=True).click()
    wait_idle(page)
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
    page.get_by_text("resnet152", exact=True).last.click()
    wait_idle(page)
    page.get_by_text("×34 identical blocks").first.wait_for()
    assert "projection shortcut" in legend()
    screenshot(page, "architecture_resnet152")


def test_projector_toggle_scales_the_graph_text_up():
    from resviz.plots.projector import SCALE

    at = checked_app("architecture")
    normal = figure(at, "arch_graph")["layout"]
    at.session_state["projector"] = True  # the sidebar's switch (app.py draws it; AppTest runs the page alone)
    at.run()
    no_exceptions(at)
    big = figure(at, "arch_graph")["layout"]
    assert big["font"]["size"] == pytest.approx(normal["font"]["size"] * SCALE) and big["font"]["size"] > 14
    assert big["hoverlabel"]["font"]["size"] == pytest.approx(normal["hoverlabel"]["font"]["size"] * SCALE)
    at.session_state["projector"] = False
    at.run()
    assert figure(at, "arch_graph")["layout"]["font"]["size"] == normal["font"]["size"]  # per student, undone
