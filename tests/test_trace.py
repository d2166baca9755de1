"""Shape tracing: checked against a real forward pass, torchvision's published totals, and hand-worked values."""
import random

import pytest
import torch
from torch import nn

from resviz import models
from resviz.hooks import Hooks
from resviz.plots.architecture import layout_graph, plot_architecture
from resviz.trace import LEAF_TYPES, TABLE_COLUMNS, ShortcutKind, stage_graph, trace_shapes

# torchvision's weight metadata: num_params and GFLOPS (= GMACs of conv + fc) at 224x224, to the digits it gives.
PUBLISHED = {"resnet18": (11_689_512, "1.814"), "resnet34": (21_797_672, "3.664"), "resnet50": (25_557_032, "4.089"),
             "resnet101": (44_549_160, "7.801"), "resnet152": (60_192_808, "11.514"),
             "resnext50_32x4d": (25_028_904, "4.23"),  # grouped 3x3 convs: each output sums C_in/groups inputs
             "wide_resnet50_2": (68_883_240, "11.398")}


def real_shapes(cfg, size):
    """Output shape of every leaf module in a real CPU forward pass (the oracle)."""
    model = models.build_model(cfg).eval()
    shapes = {}
    with Hooks() as hooks, torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, LEAF_TYPES):
                hooks.forward(m, lambda m, a, o, n=name: shapes.__setitem__(n, tuple(o.shape[1:])))
        model(torch.randn(1, cfg.in_channels, size, size))
    return shapes


def assert_trace_matches_forward(cfg):
    trace = trace_shapes(cfg)
    assert trace.error is None, trace.error
    real = real_shapes(cfg, cfg.input_size)
    traced = {r["name"]: r["out_shape"] for r in trace.rows}
    assert traced == real
    assert [r["name"] for r in trace.rows] == list(real)  # execution order too


@pytest.mark.parametrize("name", list(models.PRESETS))
def test_trace_matches_real_forward_for_every_preset(name):
    size = 32 if name in models.CIFAR_PRESETS else 64  # small inputs keep the real forward cheap
    assert_trace_matches_forward(models.get_config(name, input_size=size))


@pytest.mark.parametrize("name,size,stride_in_1x1", [("resnet20", 33, False), ("resnet20", 31, False),
                                                     ("resnet18", 37, False), ("resnet50", 65, False),
                                                     ("resnet50", 65, True)])
def test_trace_matches_real_forward_on_odd_inputs(name, size, stride_in_1x1):
    """Stride 2 on an odd size rounds up ((33 + 2 - 3) // 2 + 1 = 17; option A keeps ceil(33 / 2) = 17 pixels)."""
    cfg = models.get_config(name, input_size=size, stride_in_1x1=stride_in_1x1)
    assert_trace_matches_forward(cfg)
    assert_trace_matches_forward(models.plain_config(cfg))


def random_config(rng):
    block = rng.choice(models.BLOCKS)
    stages = rng.randint(1, 4)
    base = rng.choice([4, 8, 16])
    return models.ResNetConfig(
        block=block, layers=tuple(rng.randint(1, 3) for _ in range(stages)),
        widths=tuple(base * 2**i for i in range(stages)), stem=rng.choice(["cifar", "imagenet"]),
        stem_width=base, in_channels=rng.choice([1, 3]), input_size=rng.choice([32, 48, 64]),
        num_classes=rng.randint(2, 20), norm=rng.random() < 0.7, shortcut=rng.choice(["B", "C"] + ["A"] * (block == "basic")),
        stride_in_1x1=rng.random() < 0.5, residual=rng.random() < 0.7)


@pytest.mark.parametrize("seed", range(12))
def test_trace_matches_real_forward_for_random_custom_configs(seed):
    cfg = random_config(random.Random(seed))
    assert_trace_matches_forward(cfg)


@pytest.mark.parametrize("name", PUBLISHED)
def test_totals_match_torchvision_published_counts(name):
    trace = trace_shapes(models.get_config(name))
    params, gmacs = PUBLISHED[name]
    assert trace.total_params == params
    assert f"{trace.total_macs / 1e9:.{len(gmacs.split('.')[1])}f}" == gmacs
    assert trace.output_shape == (1000,)


def test_hand_worked_macs_and_receptive_field_on_cifar_stem():
    rows = {r["name"]: r for r in trace_shapes(models.get_config("resnet20")).rows}
    # 3x3 conv, 3 -> 16 channels, 32x32 output: 32*32*16 outputs, each 3*3*3 products.
    assert rows["conv1"]["macs"] == 32 * 32 * 16 * 27 and rows["conv1"]["params"] == 16 * 3 * 9
    assert rows["layer1.0.conv1"]["macs"] == 32 * 32 * 16 * 16 * 9
    # Receptive field grows by (k-1)*jump: 3, then 5, then 7, ... 15 after layer1's six 3x3 convs;
    # layer2.0.conv1 (stride 2) adds 2 more (17) and doubles the jump, so its conv2 adds 4 (21).
    assert [rows[n]["receptive_field"] for n in ("conv1", "layer1.0.conv1", "layer1.0.conv2")] == [3, 5, 7]
    assert rows["layer1.2.relu_out"]["receptive_field"] == 15
    assert rows["layer2.0.conv1"]["receptive_field"] == 17 and rows["layer2.0.conv2"]["receptive_field"] == 21


def test_published_receptive_fields_of_resnet18_and_50():
    for name, rf in (("resnet18", 435), ("resnet50", 427)):
        rows = trace_shapes(models.get_config(name)).rows
        assert [r for r in rows if r["op"] == "relu"][-1]["receptive_field"] == rf


def test_blocks_are_typed_with_shortcut_kind_option_and_channels():
    blocks = {b.name: b for b in trace_shapes(models.get_config("resnet50")).blocks}
    first, down, same = blocks["layer1.0"], blocks["layer2.0"], blocks["layer2.1"]
    assert (first.shortcut, first.option, first.stride) == (ShortcutKind.PROJECTION, "B", 1)
    assert first.channels_differ and not first.size_differs and first.channels == (64, 64, 64, 256)
    assert (down.shortcut, down.stride, down.in_shape, down.out_shape) == (
        ShortcutKind.PROJECTION, 2, (256, 56, 56), (512, 28, 28))
    assert down.channels == (256, 128, 128, 512) and down.type == "Bottleneck" and down.groups == 1
    assert same.shortcut is ShortcutKind.IDENTITY and not same.shapes_differ
    assert trace_shapes(models.get_config("resnext50_32x4d")).blocks[0].groups == 32
    cifar = {b.name: b for b in trace_shapes(models.get_config("resnet20")).blocks}
    assert (cifar["layer2.0"].shortcut, cifar["layer2.0"].option) == (ShortcutKind.ZERO_PAD, "A")
    assert cifar["layer2.0"].channels == (16, 32, 32) and cifar["layer2.0"].type == "BasicBlock"
    plain = trace_shapes(models.plain_config(models.get_config("resnet20")))
    assert all(b.shortcut is ShortcutKind.NONE for b in plain.blocks)
    assert not any(r["op"] == "add" for r in plain.rows)
    c = {b.name: b for b in trace_shapes(models.get_config("resnet20", shortcut="C")).blocks}
    assert c["layer1.0"].shortcut is ShortcutKind.PROJECTION and not c["layer1.0"].shapes_differ


def test_add_rows_show_both_operand_shapes_and_graph_edges_carry_shapes():
    trace = trace_shapes(models.get_config("resnet50"))
    add = next(r for r in trace.rows if r["name"] == "layer2.0.add")
    assert add["in_shape"] == ((512, 28, 28), (512, 28, 28))
    g = trace.graph
    assert g.edges["layer2.0.downsample.1", "layer2.0.add"] == {"shape": (512, 28, 28),
                                                               "kind": ShortcutKind.PROJECTION}
    assert g.edges["layer1.2.relu_out", "layer2.0.downsample.0"]["kind"] is ShortcutKind.PROJECTION
    assert g.edges["layer2.0.relu_out", "layer2.1.add"]["kind"] is ShortcutKind.IDENTITY
    assert g.edges["layer2.0.bn3", "layer2.0.add"]["kind"] is None  # the main path
    pad = trace_shapes(models.get_config("resnet20")).graph
    assert pad.edges["layer2.0.downsample", "layer2.0.add"]["kind"] is ShortcutKind.ZERO_PAD
    assert g.in_degree("layer2.0.add") == 2


@pytest.mark.parametrize("name,size", [("resnet18", 16), ("resnet50", 8), ("resnet18", 1), ("resnet20", 1)])
def test_tiny_inputs_are_traced_as_pytorch_runs_them(name, size):
    """PyTorch runs a stride-2 layer on a 1x1 map (the map stays 1x1): the trace runs it too, as the real forward."""
    cfg = models.get_config(name, input_size=size)
    assert_trace_matches_forward(cfg)
    assert trace_shapes(cfg).output_shape == (cfg.num_classes,)


def test_strides_on_a_1x1_map_are_named():
    r18 = trace_shapes(models.get_config("resnet18", input_size=16))  # 16 -> 8 -> 4 (maxpool) -> 4, 2, 1, then 1x1
    assert r18.idle_strides == ["layer4.0.conv1", "layer4.0.downsample.0"]
    assert next(b for b in r18.blocks if b.name == "layer4.0").out_shape == (512, 1, 1)
    r50 = trace_shapes(models.get_config("resnet50", input_size=8))  # stride on the 3x3 (v1.5)
    assert r50.idle_strides == ["layer3.0.conv2", "layer3.0.downsample.0", "layer4.0.conv2", "layer4.0.downsample.0"]
    assert trace_shapes(models.get_config("resnet50")).idle_strides == []


def test_channel_mismatch_and_bad_config_are_explained():
    trace = trace_shapes(models.get_config("resnet20"), input_shape=(1, 32, 32))
    assert trace.failed_layer == "conv1" and "expects 3 input channels but receives 1" in trace.error
    bad = trace_shapes(models.get_config("resnet20", layers=(3, 0, 3)))
    assert "at least one block" in bad.error and bad.failed_layer is None and bad.rows == []


def test_csv_has_a_row_per_layer():
    trace = trace_shapes(models.get_config("resnet20"))
    lines = trace.to_csv().strip().splitlines()
    assert lines[0] == ",".join(TABLE_COLUMNS) and len(lines) == len(trace.rows) + 1
    assert lines[1] == "conv1,stem,,main,conv,3,1,3×32×32,16×32×32,432,442368,3"  # 32*32*16 outputs x 27 products
    add = next(line for line in lines if line.startswith("layer2.0.add,"))
    assert add == "layer2.0.add,layer2,layer2.0,main,add,,,32×16×16 + 32×16×16,32×16×16,0,0,21"


def test_stage_graph_and_plot_for_resnet152_stay_small():
    trace = trace_shapes(models.get_config("resnet152"))
    assert stage_graph(trace).number_of_nodes() == 52
    collapsed = plot_architecture(layout_graph(trace))
    full = plot_architecture(layout_graph(trace, "all"))
    assert len(collapsed.to_json()) < 200_000 and len(full.to_json()) < 1_000_000
    names = {t.name for t in full.data}
    assert {"identity shortcut", "projection shortcut"} <= names


def test_expanded_layout_puts_shortcut_layers_below_their_row():
    g = layout_graph(trace_shapes(models.get_config("resnet50")), {"layer2"})
    y_main = g.nodes["layer2.0.conv1"]["pos"][1]
    assert g.nodes["layer2.0.downsample.0"]["pos"][1] < y_main
    assert g.nodes["layer2.0.downsample.0"]["pos"][0] == g.nodes["layer2.0.conv1"]["pos"][0]
    assert "layer3.0" in g and "layer3.0.conv1" not in g  # other stages stay collapsed


def test_trace_builds_no_real_tensors():
    trace_shapes(models.get_config("resnet20"))
    from resviz.trace import skeleton
    assert all(p.is_meta for p in skeleton(models.get_config("resnet20")).parameters())
    assert isinstance(skeleton(models.get_config("resnet20")).conv1, nn.Conv2d)
