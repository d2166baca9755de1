"""The shortcut lab page: AppTest smoke and interaction tests, and one browser test against the real server."""
import pytest

from helpers import (checked_app, figure, new_app, no_exceptions, open_page, page_exceptions, screenshot, texts,
                     wait_idle)


def _text(at) -> str:
    return texts(at, ("markdown", "warning", "success"))


@pytest.fixture(scope="module")
def lab():
    return checked_app("shortcut_lab")


def test_page_runs_and_shows_pytorchs_error(lab):
    assert not lab.error, [e.value for e in lab.error]
    assert [h.value[:1] for h in lab.main.subheader] == ["1", "2", "3", "4"]
    # default 4x6x6 -> F(x) 8x3x3: PyTorch's real message, naming the width
    assert "must match the size of tensor b (6) at non-singleton dimension 3" in lab.code[0].value
    assert "**channels** (F(x) has 8, x has 4)" in _text(lab)
    fixes = lab.table[0].value  # a static table: every column visible at any width, long text wraps
    assert list(fixes.columns) == ["works?", "result", "parameters", "MACs", "shortcut output", "what it does"]
    assert fixes.loc["Identity (no fix)", "works?"] == "no"
    assert fixes.loc["Option B: 1x1 conv + BN", "parameters"] == f"{4 * 8 + 2 * 8:,}"  # conv + BN weight and bias
    assert fixes.loc["Option B: 1x1 conv + BN", "MACs"] == f"{3 * 3 * 8 * 4:,}"
    assert fixes.loc["Concatenate channels", "result"] == "12×3×3"


def test_impossible_inputs_get_a_clear_message_and_equal_shapes_need_no_fix():
    at = new_app("shortcut_lab")
    at.number_input(key="sl_cin").set_value(0).run()
    no_exceptions(at)
    assert "at least one channel" in at.error[0].value
    at.number_input(key="sl_cin").set_value(4)
    at.number_input(key="sl_h").set_value(0).run()
    no_exceptions(at)
    assert "at least one pixel" in at.error[0].value
    at.number_input(key="sl_h").set_value(2)
    at.number_input(key="sl_w").set_value(2)
    at.number_input(key="sl_stride").set_value(4).run()  # PyTorch runs it: F(x) is 8x1x1
    no_exceptions(at)
    assert not at.error and "F(x) is **8×1×1**" in _text(at)
    at.number_input(key="sl_stride").set_value(1)
    at.number_input(key="sl_cout").set_value(4).run()  # 4x2x2 both: the identity works
    no_exceptions(at)
    assert not at.error and not at.code
    assert "identity shortcut works" in at.success[0].value


def test_pick_a_real_block_fills_the_inputs():
    at = new_app("shortcut_lab")  # default model: resnet20; its block 3 is layer2.0 (16 -> 32, stride 2)
    at.selectbox(key="sl_block").set_value(3)
    at.button(key="sl_use").click().run()
    no_exceptions(at)
    got = [at.number_input(key=k).value for k in ("sl_cin", "sl_cout", "sl_stride", "sl_h", "sl_w")]
    assert got == [16, 32, 2, 32, 32]
    fixes = at.table[0].value
    assert fixes.loc["Option A: zero-pad", "result"] == "32×16×16"
    assert fixes.loc["Option A: zero-pad", "parameters"] == "0"


def test_pick_a_block_of_an_imagenet_model():
    at = new_app("shortcut_lab")
    at.radio(key="sel_family").set_value("ImageNet").run()  # the sidebar's default ImageNet preset is resnet50
    at.selectbox(key="sl_block").set_value(13)
    at.button(key="sl_use").click().run()
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    got = [at.number_input(key=k).value for k in ("sl_cin", "sl_cout", "sl_stride", "sl_h", "sl_w")]
    assert got == [1024, 2048, 2, 14, 14]  # layer4.0
    fixes = at.table[0].value
    assert fixes.loc["Option B: 1x1 conv + BN", "parameters"] == f"{1024 * 2048 + 2 * 2048:,}"
    assert fixes.loc["Option B: 1x1 conv + BN", "MACs"] == f"{7 * 7 * 2048 * 1024:,}"  # written as on screen


def test_pixel_slider_moves_the_product():
    at = new_app("shortcut_lab")
    at.slider(key="sl_row").set_value(2)
    at.slider(key="sl_col").set_value(1).run()
    no_exceptions(at)
    title = figure(at, "sl_product")["layout"]["title"]["text"]
    assert title == "Input pixel (4, 2) → output pixel (2, 1)"  # stride 2 doubles it


def test_bottleneck_costs_shown(lab):
    at = new_app("shortcut_lab")
    at.radio(key="sl_bn_stride").set_value(1).run()
    no_exceptions(at)
    paper = at.dataframe[0].value
    assert list(paper["parameters"]) == [256 * 64, 64 * 64 * 9, 64 * 256]
    assert list(paper["MACs"]) == [56 * 56 * 64 * 256, 56 * 56 * 64 * 64 * 9, 56 * 56 * 256 * 64]
    v15 = lab.dataframe[1].value  # default stride 2: the stride sits on the 3x3
    assert list(v15["stride"]) == [1, 2, 1]
    assert list(lab.dataframe[0].value["stride"]) == [2, 1, 1]


@pytest.mark.browser
def test_browser_shortcut_lab(app_server, page):
    open_page(page, app_server)  # a fresh server runs a pages/ file without app.py on a first direct visit
    open_page(page, app_server, "shortcut_lab")
    page.get_by_text("What a 1x1 convolution is").first.wait_for(timeout=90_000)  # the page's last part
    page.get_by_text("what PyTorch says").first.click()  # PyTorch's own message is folded under the verdict
    page.get_by_text("must match the size of tensor").first.wait_for(timeout=90_000)
    assert page_exceptions(page) == []
    body = page.inner_text("body")
    assert "Shortcut lab" in body and "must match the size of tensor" in body
    assert "What a 1x1 convolution is" in body
    for label, value in (("Input channels", 1024), ("Output channels", 2048), ("Height", 14), ("Width", 14)):
        box = page.get_by_label(label)  # layer4.0 of a ResNet-50: the longest texts in the fixes table
        box.fill(str(value))
        box.press("Enter")
        wait_idle(page)
    macs = page.get_by_role("columnheader", name="MACs").bounding_box()
    cell = page.get_by_role("cell", name="102,760,448").bounding_box()  # option B: 7*7*2048*1024
    assert macs and cell and macs["x"] + macs["width"] <= 1400 and cell["x"] + cell["width"] <= 1400
    screenshot(page, "shortcut_lab")


def test_every_setting_is_the_widgets_own_default_so_a_link_without_it_means_that_default():
    """A link (or the teacher's view) names only what differs from the widget's default: the lab's defaults must be
    the widgets' own, not values put in session_state (a follower read the channels as the widget's default, 0)."""
    at = new_app("shortcut_lab")
    defaults = {k: at.number_input(key=k).proto.default for k in ("sl_cin", "sl_cout", "sl_stride", "sl_h", "sl_w")}
    assert defaults == {"sl_cin": 4, "sl_cout": 8, "sl_stride": 2, "sl_h": 6, "sl_w": 6}
    assert [at.number_input(key=k).value for k in defaults] == [4, 8, 2, 6, 6]
