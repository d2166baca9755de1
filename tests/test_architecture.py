"""The Architecture lesson: what it says about the network shown, checked against the traced numbers."""
import pytest

from resviz import models
from resviz.lessons import architecture as arch
from resviz.lessons.architecture import Change
from resviz.trace import trace_shapes


def story(name, **kw):
    return arch.bottlenecks(trace_shapes(models.get_config(name, **kw)))


def test_bottleneck_callout_names_the_first_block_that_really_squeezes():
    r50 = story("resnet50")
    assert (r50.first.block, r50.first.c_in, r50.first.width, r50.first.first) == ("layer1.0", 64, 64, Change.KEEPS)
    assert (r50.squeeze.block, r50.squeeze.c_in, r50.squeeze.width, r50.squeeze.c_out) == ("layer1.1", 256, 64, 256)
    text = arch.bottleneck_text(r50)
    assert "in `layer1.1` the first 1x1 conv squeezes 256 channels to 64 (4x fewer)" in text
    assert "`layer1.0` gets 64 channels from the stem: its first 1x1 squeezes nothing (64 → 64)" in text


def test_wide_and_grouped_bottlenecks_get_the_right_verbs():
    wide = story("wide_resnet50_2")
    assert wide.first.first is Change.EXPANDS and (wide.first.c_in, wide.first.width) == (64, 128)
    text = arch.bottleneck_text(wide)
    assert "its first 1x1 expands them (64 → 128)" in text and "squeezes 256 channels to 128 (2x fewer)" in text
    assert "in 32 groups of 4 channels" in arch.bottleneck_text(story("resnext50_32x4d"))
    assert arch.bottlenecks(trace_shapes(models.get_config("resnet18"))) is None
    never = arch.bottlenecks(trace_shapes(models.ResNetConfig(block="bottleneck", layers=(2,), widths=(8,), stem_width=8,
                                                              width_per_group=256, input_size=32)))
    assert never.squeeze is None and (never.first.c_in, never.first.width, never.first.c_out) == (8, 32, 32)
    text = arch.bottleneck_text(never)
    assert "no block of this network squeezes" in text and "expands them (8 → 32), and its last 1x1 keeps 32" in text


def test_only_blocks_whose_shapes_differ_are_listed_and_option_c_says_so():
    c = trace_shapes(models.get_config("resnet20", shortcut="C"))
    assert [b.name for b in arch.reshaping_blocks(c)] == ["layer2.0", "layer3.0"]
    assert len(arch.needless_projections(c)) == 7
    text = arch.reshaping_text(c)
    assert text.count("(option C") == 2 and "`layer1.0`:" not in text and "on the 7 blocks whose shapes" in text
    b = arch.reshaping_text(trace_shapes(models.get_config("resnet50")))
    assert "`layer1.0`: 64×56×56 → 256×56×56 because channels differ (64→256)" in b and "option C" not in b
    assert arch.reshaping_text(trace_shapes(models.plain_config(models.get_config("resnet50")))) is None


@pytest.mark.parametrize("name,px", [("resnet18", 435), ("resnet50", 427)])
def test_receptive_field_is_called_theoretical_and_can_exceed_the_image(name, px):
    rf = arch.receptive_field(trace_shapes(models.get_config(name)))
    assert (rf.px, rf.input_px, rf.exceeds_input) == (px, 224, True)
    text = arch.receptive_field_text(rf)
    assert "(theoretical)" in text and f"{px} px on this 224 px input" in text
    big = arch.receptive_field(trace_shapes(models.get_config(name, input_size=512)))
    assert big.px == px and not big.exceeds_input and "exceed" not in arch.receptive_field_text(big)


@pytest.mark.parametrize("name,paper,in_1x1,in_3x3", [("resnet50", 3.8, "3.86", "4.09"),
                                                      ("resnet101", 7.6, "7.57", "7.80"),
                                                      ("resnet152", 11.3, "11.28", "11.51")])
def test_macs_for_either_stride_placement_match_the_paper_and_torchvision(name, paper, in_1x1, in_3x3):
    cfg = models.get_config(name)
    placement = arch.stride_placement(cfg)
    assert (f"{placement.in_1x1 / 1e9:.2f}", f"{placement.in_3x3 / 1e9:.2f}") == (in_1x1, in_3x3)
    assert placement.paper_gmacs == paper and not placement.chosen_in_1x1
    assert trace_shapes(models.get_config(name, stride_in_1x1=True)).total_macs == placement.in_1x1
    text = arch.macs_text(cfg, placement.in_3x3, placement)
    assert f"give **{paper} G**" in text and f"(measured here: {in_1x1} G)" in text and f"**{in_3x3} G**" in text
    paper_cfg = models.get_config(name, stride_in_1x1=True)
    assert "Shown: the stride on the first 1x1" in arch.macs_text(paper_cfg, 0, arch.stride_placement(paper_cfg))


def test_macs_notes_for_basic_and_custom_nets():
    r18 = models.get_config("resnet18")
    assert arch.stride_placement(r18) is None
    assert arch.macs_text(r18, 1_814_000_000, None) == ("He et al. (2016, Table 1) give 1.8 G multiply-adds for "
                                                         "resnet18; measured here: 1.81 G.")
    assert arch.macs_text(models.get_config("resnet20"), 40_000_000, None) is None
    assert arch.paper_gmacs(models.get_config("resnet50", input_size=112)) is None  # not the paper's net
    wide = models.get_config("wide_resnet50_2")
    assert "He et al." not in arch.macs_text(wide, 0, arch.stride_placement(wide))


def test_idle_strides_are_a_warning_not_an_error():
    trace = trace_shapes(models.get_config("resnet18", input_size=16))
    assert trace.error is None and trace.output_shape == (1000,)
    text = arch.idle_stride_text(trace)
    assert "already 1x1 when it reaches `layer4.0.conv1`" in text and "their stride does nothing" in text
    assert arch.idle_stride_text(trace_shapes(models.get_config("resnet18"))) is None
