"""Architecture page and app frame: AppTest smoke and interaction tests, and one real-browser visit."""
import pytest

from conftest import new_app, no_exceptions, open_page, page_exceptions, screenshot


def metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def test_home_page_explains_residual_block():
    at = new_app()
    no_exceptions(at)
    assert "F(x) + x" in " ".join(m.value for m in at.markdown)


def test_architecture_defaults_to_resnet20_with_paper_counts():
    at = new_app("architecture")
    no_exceptions(at)
    assert metric(at, "Parameters") == "269,722"
    assert metric(at, "Weighted layers") == "20"
    assert any("zero-pad, stride 2" in w.value for w in at.warning)


def test_choosing_resnet50_shows_bottleneck_and_projection_callouts():
    at = new_app("architecture", sidebar={"sel_family": "ImageNet", "sel_imagenet": "resnet50"})
    no_exceptions(at)
    assert metric(at, "Parameters") == "25,557,032"
    assert metric(at, "Receptive field") == "427 px"  # the last conv's, as published (pooling excluded)
    assert any("expands them to 256 (4x)" in i.value for i in at.info)
    assert any("1x1 projection, stride 2" in w.value for w in at.warning)


def test_plain_twin_toggle_removes_shortcuts_and_projection_parameters():
    at = new_app("architecture", sidebar={"sel_family": "ImageNet"})
    at.toggle(key="arch_plain").set_value(True).run()
    no_exceptions(at)
    assert int(metric(at, "Parameters").replace(",", "")) < 25_557_032
    assert not at.warning and any("no shortcuts" in c.value for c in at.caption)


def test_impossible_custom_config_shows_clear_error_and_partial_table():
    at = new_app("architecture", sidebar={"sel_family": "Custom", "sel_layers": "1, 1, 1, 1, 1, 1", "sel_size": 8})
    no_exceptions(at)
    assert any("cannot run" in e.value and "too small" in e.value for e in at.error)
    assert len(at.dataframe[0].value) > 0


def test_unparsable_custom_stages_keep_previous_model():
    at = new_app(sidebar={"sel_family": "Custom", "sel_layers": "two, 2"})
    no_exceptions(at)
    assert any("whole numbers" in e.value for e in at.sidebar.error)
    assert at.session_state["selection"].cfg.name == "resnet20"


def test_expand_all_layers_and_csv_download():
    at = new_app("architecture")
    at.get_by_key("arch_expand").set_value("all").run()
    no_exceptions(at)
    assert at.get("download_button")


@pytest.mark.browser
def test_every_page_renders_in_chromium_without_exceptions(app_server, page):
    from resviz.lessons import page_texts

    for path, text in page_texts().items():
        open_page(page, app_server, path)
        assert page_exceptions(page) == [], path
        assert page.get_by_text(text).first.is_visible(), (path, text)
        screenshot(page, path or "home")
