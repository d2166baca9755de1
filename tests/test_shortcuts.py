"""The shortcut lab's library: every number against a hand-worked value on a small case."""
import numpy as np
import pytest
import torch

from resviz import models
from resviz import shortcuts as sc
from resviz.models import ConfigError
from resviz.plots import shortcuts as plots


@pytest.fixture(scope="module")
def lab():
    # x: 2x4x4. F(x): 3x3 conv 2->4, stride 2 -> 4x2x2.
    return sc.compare_fixes(2, 4, 2, 4, 4)


def _fix(lab, name):
    return next(r for r in lab["fixes"] if r["fix"].startswith(name))


def test_conv_macs_by_hand():
    conv = torch.nn.Conv2d(6, 4, 3, groups=2)
    assert sc.conv_macs(conv, (1, 4, 5, 5)) == 100 * 3 * 9  # 100 outputs x (6/2) inputs x 3 x 3


def test_branch_and_naive_addition(lab):
    assert lab["x_shape"] == (1, 2, 4, 4) and lab["fx_shape"] == (1, 4, 2, 2)
    assert lab["branch_params"] == 2 * 4 * 9 + 2 * 4  # conv weights + BN weight and bias
    assert lab["branch_macs"] == 4 * 2 * 2 * 2 * 9
    naive = lab["naive"]
    assert not naive["ok"]
    assert naive["error"] == ("The size of tensor a (2) must match the size of tensor b (4) "
                              "at non-singleton dimension 3")  # PyTorch's own words
    assert (naive["torch_dim"], naive["torch_dim_name"]) == (3, "width")
    assert [(m["name"], m["F(x)"], m["x"]) for m in naive["mismatches"]] == [
        ("channels", 4, 2), ("height", 2, 4), ("width", 2, 4)]
    text = sc.mismatch_text(naive)
    assert "**channels** (F(x) has 4, x has 2)" in text and "dimension 3 (width) only" in text


def test_fixes_shapes_params_macs(lab):
    assert not _fix(lab, "Identity")["works"]
    a = _fix(lab, "Option A")
    assert a["works"] and a["result_shape"] == (1, 4, 2, 2) and (a["params"], a["macs"]) == (0, 0)
    b = _fix(lab, "Option B")
    assert b["works"] and b["result_shape"] == (1, 4, 2, 2)
    assert b["params"] == 2 * 4 + 2 * 4  # 1x1 conv weights + BN weight and bias
    assert b["macs"] == 4 * 2 * 2 * 2  # 16 output elements x 2 input channels x 1 x 1
    cat = _fix(lab, "Concatenate")
    assert cat["works"] and cat["result_shape"] == (1, 6, 2, 2) and cat["shortcut_shape"] == (1, 2, 2, 2)
    nl = lab["next_layer"]
    assert nl["after_add"] == {"in_channels": 4, "params": 4 * 4 * 9, "macs": 4 * 2 * 2 * 4 * 9}
    assert nl["after_cat"] == {"in_channels": 6, "params": 6 * 4 * 9, "macs": 4 * 2 * 2 * 6 * 9}
    table = sc.fix_table(lab)
    assert [r["result"] for r in table] == ["—", "4×2×2", "4×2×2", "6×2×2"]


def test_option_a_is_models_padshortcut():
    x = sc.lab_input(2, 4, 4)
    out = models.PadShortcut(2, 4, 2)(x)
    torch.testing.assert_close(out[:, :2], x[:, :, ::2, ::2])  # the kept pixels, unchanged
    assert out[:, 2:].abs().sum() == 0  # the new channels are zeros
    assert isinstance(models.make_shortcut(sc._LAB_CFG, 2, 4, 2), models.PadShortcut)


def test_equal_shapes_and_broadcast_and_fewer_channels():
    same = sc.compare_fixes(3, 3, 1, 4, 4)
    assert same["naive"]["ok"] and not same["naive"]["mismatches"]
    assert "identity shortcut works" in sc.mismatch_text(same["naive"])
    # 1 channel vs 4: PyTorch broadcasts silently; the lab must not call that a working shortcut
    bc = sc.compare_fixes(1, 4, 1, 3, 3)
    assert bc["naive"]["ok"] and bc["naive"]["broadcast"] and bc["naive"]["result_shape"] == (1, 4, 3, 3)
    assert not _fix(bc, "Identity")["works"] and "broadcast" in sc.mismatch_text(bc["naive"])
    fewer = sc.compare_fixes(8, 4, 1, 3, 3)
    assert not _fix(fewer, "Option A")["works"] and "only add channels" in _fix(fewer, "Option A")["error"]
    assert _fix(fewer, "Option B")["works"]


@pytest.mark.parametrize("args, message", [
    ((0, 4, 1, 4, 4), "at least one channel"),
    ((4, 0, 1, 4, 4), "at least one channel"),
    ((4, 4, 1, 0, 4), "at least one pixel"),
    ((4, 4, 4, 2, 8), "Stride 4 is larger than the 2x8 image"),
    ((4, 4, 1, 4, 4000), "at most"),
    ((2048, 2048, 1, 256, 256), "billion multiply-accumulates"),
])
def test_impossible_inputs(args, message):
    with pytest.raises(ConfigError, match=message):
        sc.compare_fixes(*args)


def test_pixel_product_is_the_conv():
    p = sc.pixel_product(3, 4, 2, 5, 5, row=1, col=2)
    assert p["in_pixel"] == (2, 4) and p["out_hw"] == (3, 3) and p["weight"].shape == (4, 3)
    np.testing.assert_allclose(p["y_by_hand"], p["y_conv"], atol=1e-5)
    # by hand, with a loop: y_o = sum_i W[o, i] x_i
    manual = [sum(p["weight"][o, i] * p["x_vec"][i] for i in range(3)) for o in range(4)]
    np.testing.assert_allclose(manual, p["y_conv"], atol=1e-5)
    x = sc.lab_input(3, 5, 5)
    np.testing.assert_allclose(p["x_vec"], x[0, :, 2, 4].double().numpy())
    assert p["params"] == 12 and p["macs"] == 9 * 4 * 3
    both = sc.lab_modules(3, 4, 2)  # the page's table and its product use the same option-B weights
    torch.testing.assert_close(both["conv1x1"].weight[:, :, 0, 0].double(), torch.from_numpy(p["weight"]))
    with pytest.raises(ConfigError, match="inside the 3x3 output"):
        sc.pixel_product(3, 4, 2, 5, 5, row=3, col=0)


def test_kept_pixels_by_hand():
    kept = sc.kept_pixels(2, 5, 5)
    assert kept.sum() == 9 and kept[0, 0] and kept[4, 4] and not kept[1, 0] and not kept[0, 3]
    assert sc.kept_pixels(3, 4, 4).nonzero()[0].tolist() == [0, 0, 3, 3]
    assert sc.kept_pixels(1, 2, 3).all()


def test_dot_text():
    assert sc.dot_text(np.array([0.5, -0.25]), np.array([2.0, 4.0])) == "0.5×2 + (-0.25)×4 = 0.0000"
    assert "(3 more)" in sc.dot_text(np.ones(7), np.ones(7), max_terms=4)
    assert sc.dot_text(np.array([-0.00001]), np.array([1.0])).startswith("0×1 ")  # no "-0"


def test_bottleneck_costs_by_hand():
    one = sc.bottleneck_costs(256, 1, 56)
    names = list(one)
    bottleneck, basic = one[names[1]], one[names[2]]
    assert bottleneck["params"] == 256 * 64 + 64 * 64 * 9 + 64 * 256 == 69_632
    assert bottleneck["macs"] == 56 * 56 * 69_632
    assert basic["params"] == 2 * 256 * 256 * 9 == 1_179_648
    assert one[names[3]]["params"] == 2 * 64 * 64 * 9  # the paper's Fig. 5 comparison
    two = sc.bottleneck_costs(256, 2, 56)
    paper, v15 = two[names[0]], two[names[1]]
    assert [r["stride"] for r in paper["rows"]] == [2, 1, 1] and [r["stride"] for r in v15["rows"]] == [1, 2, 1]
    assert paper["params"] == v15["params"]
    assert paper["macs"] == 28 * 28 * (256 * 64 + 64 * 64 * 9 + 64 * 256)
    assert v15["macs"] == 56 * 56 * 256 * 64 + 28 * 28 * (64 * 64 * 9 + 64 * 256)
    assert sc.layer_table(v15["rows"])[1] == {"layer": "conv2", "kernel": "3x3", "stride": 2, "input": "64×56×56",
                                              "output": "64×28×28", "parameters": 36_864, "MACs": 28 * 28 * 64 * 576}
    with pytest.raises(ConfigError, match="divisible by 4"):
        sc.bottleneck_costs(6)


def test_model_blocks_cifar_and_imagenet():
    blocks = sc.model_blocks(models.get_config("resnet20"))
    assert len(blocks) == 9
    assert blocks[3] == {"name": "layer2.0", "block": "BasicBlock", "in_ch": 16, "out_ch": 32, "stride": 2,
                         "height": 32, "width": 32, "shortcut": "A: zero-pad"}
    assert blocks[4]["shortcut"] == "identity" and blocks[6]["height"] == 16
    r50 = sc.model_blocks(models.get_config("resnet50"))
    first = r50[0]
    assert (first["in_ch"], first["out_ch"], first["height"], first["shortcut"]) == (64, 256, 56, "B: 1x1 conv + BN")
    assert (r50[13]["name"], r50[13]["in_ch"], r50[13]["out_ch"], r50[13]["stride"], r50[13]["height"]) == (
        "layer4.0", 1024, 2048, 2, 14)
    plain = sc.model_blocks(models.plain_config(models.get_config("resnet20")))
    assert plain[3]["shortcut"] == "none (plain twin)"
    assert "layer2.0 · 16→32 channels · stride 2" in sc.block_label(blocks[3])


def test_plots():
    p = sc.pixel_product(3, 4, 2, 5, 5, row=1, col=2)
    fig = plots.plot_pixel_product(p)
    assert len(fig.data) == 3 and fig.data[1].z.shape == (3, 1) and fig.data[2].z.shape == (4, 1)
    assert fig.data[0].text[0][0] == f"{round(p['weight'][0, 0], 4):g}"  # small matrices show their numbers
    assert fig.data[0].zmax == np.abs(p["weight"]).max() and fig.data[1].zmax == fig.data[2].zmax
    kept = plots.plot_kept_pixels(p["kept"], p["in_pixel"], 2)
    assert "9 of 25" in kept.layout.title.text and list(kept.data[2].x) == [4]
    big = sc.pixel_product(64, 32, 1, 2, 2)
    assert big["y0_text"].endswith(f"(60 more) = {big['y_by_hand'][0]:.4f}")  # all 64 inputs, not the shown 48
    big_fig = plots.plot_pixel_product(big)
    assert big_fig.data[0].z.shape == (32, sc.MAX_SHOWN)
    assert f"(32 out × 64 in), first 32×{sc.MAX_SHOWN} shown" in big_fig.layout.annotations[0].text
    costs = sc.bottleneck_costs(256, 1, 56)
    bars = plots.plot_bottleneck_costs(costs)
    assert list(bars.data[0].y) == [c["params"] for c in costs.values()]
    assert plots._cells(np.array([[-1e-5, 0.25]]), 4).tolist() == [["0", "0.25"]]  # no "-0"
