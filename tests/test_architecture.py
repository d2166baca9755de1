"""The Architecture lesson: what it says about the network shown, checked against the traced numbers."""
import pytest

from resviz import models
from resviz.lessons import architecture as arch
from resviz.lessons.architecture import Change
from resviz.trace import ShortcutKind
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


@pytest.mark.parametrize("name,px,layer", [("resnet18", 435, "layer4.1.conv2"), ("resnet50", 427, "layer4.2.conv3"),
                                           ("resnext50_32x4d", 427, "layer4.2.conv3")])
def test_receptive_field_is_called_theoretical_and_can_exceed_the_image(name, px, layer):
    rf = arch.receptive_field(trace_shapes(models.get_config(name)))
    assert (rf.px, rf.input_px, rf.exceeds_input, rf.layer) == (px, 224, True, layer)
    text = arch.receptive_field_text(rf)
    assert "(theoretical)" in text and f"{px} px on this 224 px input" in text
    assert f"`{layer}`, the last conv layer before global pooling" in text
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


def test_option_c_projection_is_not_the_last_layer_that_sees_the_most():
    rf = arch.receptive_field(trace_shapes(models.get_config("resnet20", shortcut="C")))
    assert (rf.px, rf.layer) == (81, "layer3.2.conv2")  # the block's 1x1 projection comes later and sees 65 px


def test_plain_twin_macs_say_which_network_each_figure_is_for():
    twin, resnet = models.plain_config(models.get_config("resnet50")), models.get_config("resnet50")
    placement, of_resnet = arch.stride_placement(twin), arch.stride_placement(resnet)
    assert (f"{placement.in_1x1 / 1e9:.2f}", f"{placement.in_3x3 / 1e9:.2f}") == ("3.50", "3.73")  # no projections
    text = arch.macs_text(twin, placement.in_3x3, placement, of_resnet)
    assert "give **3.8 G** multiply-adds for the ResNet resnet50" in text and "(measured here: 3.86 G)" in text
    assert "torchvision's resnet50 (\"v1.5\", the stride on the 3x3) has **4.09 G**" in text
    assert "Its plain twin, shown, has no projection shortcuts: 3.50 G with the stride on the first 1x1, 3.73 G on " \
           "the 3x3" in text and "**3.73" not in text
    wide = models.plain_config(models.get_config("wide_resnet50_2"))
    text = arch.macs_text(wide, 0, arch.stride_placement(wide), arch.stride_placement(models.get_config(
        "wide_resnet50_2")))
    assert "He et al." not in text and text.startswith("The ResNet wide_resnet50_2: ")
    assert "Its plain twin, shown" in text
    r18 = models.plain_config(models.get_config("resnet18"))
    assert arch.macs_text(r18, 1_800_000_000, None).endswith("measured here: 1.80 G for its plain twin, shown (no "
                                                             "projection shortcuts).")


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


# --- the graph (resviz/plots/architecture.py) ---
from resviz.plots import architecture as graph  # noqa: E402

PLOT_PX = 1000  # the chart's plotting width on a 1400 px wide page (sidebar open)
CHAR_PX = 8.5  # a 14 px character is at most this wide on average


def _figure(name, view=(), **kw):
    trace = trace_shapes(models.get_config(name, **kw))
    return graph.layout_graph(trace, view), graph.plot_architecture(graph.layout_graph(trace, view), name)


def test_blocks_view_draws_every_shortcut_in_its_own_colour():
    g, fig = _figure("resnet50")
    lines = {t.name: t for t in fig.data if t.mode == "lines"}
    assert {"identity shortcut", "projection shortcut"} <= set(lines)
    arcs = [(u, v, d["kind"]) for u, v, d in g.edges(data=True) if d.get("arc")]
    assert len(arcs) == 16  # one per block
    assert sum(k is ShortcutKind.PROJECTION for *_, k in arcs) == 4 and ("layer1.in", "layer1.0.add") in {
        (u, v) for u, v, _ in arcs}
    shortcut = set(graph.SHORTCUT_COLOURS.values())
    others = [t.marker.color for t in fig.data if t.mode != "lines" and t.name not in (
        "1x1 projection on the shortcut", "zero-pad on the shortcut (option A)")]
    assert not shortcut & set(others) and not shortcut & {graph.EDGE_STYLE[None][0]}
    assert lines["identity shortcut"].line.color != next(t for t in fig.data if t.name == "ReLU").marker.color
    plain_g, plain = _figure("resnet50", residual=False)
    assert not any(d.get("arc") for *_, d in plain_g.edges(data=True))
    assert not {"identity shortcut", "projection shortcut"} & {t.name for t in plain.data}


def test_long_stages_fold_their_identical_blocks():
    g, _ = _figure("resnet152")
    row = sorted((d["pos"][0], n) for n, d in g.nodes(data=True) if n.startswith("layer3.") and d["op"] in (
        "block", "fold"))
    assert [n for _, n in row] == ["layer3.0", "layer3.1 … layer3.34", "layer3.35"]
    assert g.nodes["layer3.1 … layer3.34"]["label"] == "layer3.1 … layer3.34<br>×34 identical blocks"
    assert "layer2.7" in g  # 8 blocks fit in a row
    assert graph.fold_stage(trace_shapes(models.get_config("resnet101")).blocks[7:30])[1].name == \
        "layer3.1 … layer3.21"


@pytest.mark.parametrize("name,view", [("resnet152", ()), ("resnet152", "all"), ("resnet50", {"layer2"}),
                                       ("resnet20", ()), ("wide_resnet50_2", ())])
def test_labels_do_not_overlap_and_text_is_large_and_dark(name, view):
    g, fig = _figure(name, view)
    x0, x1 = fig.layout.xaxis.range
    px = PLOT_PX / (x1 - x0)
    rows = {}
    for n, d in g.nodes(data=True):
        if d.get("label") and d.get("text_position", "top center") == "top center":
            rows.setdefault(round(d["pos"][1], 3), []).append((d["pos"][0], max(map(len, d["label"].split("<br>")))))
    for y, labels in rows.items():
        labels.sort()
        for (xa, la), (xb, lb) in zip(labels, labels[1:]):
            assert (xb - xa) * px >= (la + lb) / 2 * CHAR_PX, (name, y, xa, xb)
    sizes = [t.textfont.size for t in fig.data if t.mode and "text" in t.mode] + [fig.layout.legend.font.size]
    assert min(sizes) >= 14 and fig.layout.font.size >= 14
    colours = {t.textfont.color for t in fig.data if t.mode and "text" in t.mode} | {fig.layout.font.color}
    assert colours == {"#1a1a1a"}


@pytest.mark.parametrize("view", [(), "all"])
def test_axes_fit_the_graph_without_a_blank_band(view):
    g, fig = _figure("resnet20", view)
    ys = [d["pos"][1] for _, d in g.nodes(data=True)]
    bottom, top = fig.layout.yaxis.range
    assert 0 < top - max(ys) <= 0.6 and 0 < min(ys) - bottom <= 1.0
    assert fig.layout.height <= (top - bottom) * graph.PX_PER_UNIT_Y + 150


def test_the_failing_layer_is_marked_on_the_graph():
    trace = trace_shapes(models.get_config("resnet20"), input_shape=(1, 32, 32))  # conv1 wants 3 channels
    g = graph.layout_graph(trace)
    assert g.nodes["failed"]["label"] == "conv1: cannot run" and "expects 3 input channels" in g.nodes["failed"]["hover"]
    assert g.has_edge("input", "failed") and g.nodes["failed"]["pos"][0] > g.nodes["input"]["pos"][0]
    fig = graph.plot_architecture(g)
    assert next(t for t in fig.data if t.name == "cannot run" and t.mode != "lines").text == ("conv1: cannot run",)
