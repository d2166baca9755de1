"""Models: torchvision is the oracle; the paper's table gives the CIFAR parameter counts."""
import pytest
import torch
import torchvision

from resviz import models
from resviz.hooks import Hooks
from resviz.models import ConfigError, build_model, count_params, get_config, plain_twin

TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet50": 25_557_032, "resnet152": 60_192_808}


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2"])
def test_torchvision_state_dict_loads_strict_and_gives_same_output(name):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)().eval()
    ours = build_model(name).eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))


@pytest.mark.parametrize("name,count", TORCHVISION_PARAMS.items())
def test_imagenet_param_counts_match_torchvision(name, count):
    with torch.device("meta"):
        assert count_params(build_model(name)) == count


# He et al. 2016, Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M.
@pytest.mark.parametrize("n,millions", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_cifar_param_counts_match_paper(n, millions):
    model = build_model(f"resnet{n}")
    assert round(count_params(model) / 1e6, 2 if n < 100 else 1) == millions
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.cfg.depth == n


def _count_adds(model):
    calls = []
    with Hooks() as hooks:
        for m in model.modules():
            if isinstance(m, models.Add):
                hooks.forward(m, lambda *a: calls.append(1))
        model(torch.randn(1, 3, 32, 32))
    return len(calls)


def test_plain_twin_has_no_additions_and_shares_weights():
    model = build_model("resnet20", seed=0)
    twin = plain_twin(model)
    assert _count_adds(model) == 9 and _count_adds(twin) == 0
    assert not twin.cfg.residual and all(b.downsample is None for b in twin.blocks())
    torch.testing.assert_close(twin.layer2[0].conv1.weight, model.layer2[0].conv1.weight)


def test_plain_bottleneck_twin_never_adds_even_where_shapes_match():
    # stem 32 channels = 8 planes x 4: layer1.0's x and F(x) have the same shape, so x *could* be added
    cfg = models.plain_config(models.ResNetConfig(block="bottleneck", layers=(2, 2), widths=(8, 16), stem="cifar",
                                                  stem_width=32, input_size=8, num_classes=3))
    model = build_model(cfg, seed=0).eval()
    assert _count_adds(model) == 0
    with torch.no_grad():
        for b in model.blocks():
            x = torch.randn(1, b.conv1.in_channels, 8, 8)
            fx = b.bn3(b.conv3(b.relu2(b.bn2(b.conv2(b.relu(b.bn1(b.conv1(x))))))))
            torch.testing.assert_close(b(x), torch.relu(fx))  # relu(F(x)), never relu(F(x) + x)


# Projection = 1x1 conv (C_in x C_out) + BN (2 x C_out). B: layer2.0 16->32 (576), layer3.0 32->64 (2,176).
# C adds 16->16 x3 (288 each), 32->32 x2 (1,088 each), 64->64 x2 (4,224 each).
@pytest.mark.parametrize("option,projections,params", [("A", 0, 0), ("B", 2, 2_752), ("C", 9, 14_240)])
def test_shortcut_options_add_the_projections_and_parameters_worked_by_hand(option, projections, params):
    model = build_model(get_config("resnet20", shortcut=option))
    proj = [b for b in model.blocks() if isinstance(b.downsample, torch.nn.Sequential)]
    assert len(proj) == projections
    assert count_params(model) - count_params(build_model("resnet20", shortcut="A")) == params
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_option_a_pads_with_zeros_and_subsamples():
    pad = models.PadShortcut(2, 4, 2)
    x = torch.arange(2 * 4 * 4, dtype=torch.float).reshape(1, 2, 4, 4)
    y = pad(x)
    assert y.shape == (1, 4, 2, 2)
    torch.testing.assert_close(y[0, 0], torch.tensor([[0.0, 2.0], [8.0, 10.0]]))
    assert y[0, 2:].abs().sum() == 0


def test_custom_config_no_norm_bottleneck_runs():
    cfg = models.ResNetConfig(block="bottleneck", layers=(1, 1), widths=(8, 16), stem="cifar", stem_width=8,
                              in_channels=1, input_size=16, num_classes=5, norm=False, shortcut="C")
    model = build_model(cfg)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 5)


def test_stride_placement_paper_vs_torchvision():
    v15 = build_model("resnet50")
    paper = build_model("resnet50", stride_in_1x1=True)
    assert v15.layer2[0].conv2.stride == (2, 2) and v15.layer2[0].conv1.stride == (1, 1)
    assert paper.layer2[0].conv1.stride == (2, 2) and paper.layer2[0].conv2.stride == (1, 1)


@pytest.mark.parametrize("bad", [dict(block="dense"), dict(shortcut="D"), dict(layers=(2, 0, 2)),
                                 dict(layers=(1,), widths=(16, 32)), dict(widths=(0, 32, 64))])
def test_impossible_configs_raise_clear_errors(bad):
    with pytest.raises(ConfigError):
        build_model(get_config("resnet20", **bad))


def test_seed_gives_identical_weights_without_touching_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("resnet20", seed=7)
    after = torch.rand(1)
    b = build_model("resnet20", seed=7)
    assert before == after
    torch.testing.assert_close(a.state_dict(), b.state_dict())


def test_pick_device_defaults_to_available_and_rejects_missing():
    assert models.pick_device().type in ("cuda", "mps", "cpu")
    assert models.pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError):
            models.pick_device("cuda")


def test_seeded_build_ignores_what_other_threads_draw_meanwhile():
    import threading

    ref = build_model("resnet20", seed=3).state_dict()
    stop = threading.Event()

    def noisy():
        while not stop.is_set():
            torch.rand(1000)  # another student's code drawing from the global RNG

    t = threading.Thread(target=noisy)
    t.start()
    try:
        again = [build_model("resnet20", seed=3).state_dict() for _ in range(3)]
    finally:
        stop.set()
        t.join()
    for sd in again:
        torch.testing.assert_close(sd, ref)


# --- issue 20: absurd configs refused in plain words, cheaply, before any trace ------------------------------
class Untouchable(tuple):
    """A tuple whose items must not be looked at: only its length may be asked."""

    def __iter__(self):
        raise AssertionError("the items were read before the number of stages was checked")

    __getitem__ = __iter__


def sidebar_config(stages: int, base: int = 16, **kw) -> models.ResNetConfig:
    """What the sidebar makes of 'Blocks per stage' 2, 2, ... (``stages`` of them): widths double each stage."""
    return models.ResNetConfig(**dict(block="basic", layers=(2,) * stages, widths=tuple(base * 2**i for i in range(
        stages)), stem="cifar", stem_width=base, input_size=32, num_classes=10) | kw)


@pytest.fixture
def no_trace(monkeypatch):
    """Tracing, estimating or building any model fails the test: refusals must come before them."""
    from resviz import trace
    from resviz.inputs import budget

    def fail(*args, **kw):
        raise AssertionError("traced or built before the config was checked")
    for module, name in ((trace, "trace_shapes"), (trace, "skeleton"), (budget, "estimate"),
                         (models.ResNet, "__init__")):
        monkeypatch.setattr(module, name, fail)


def test_a_26_stage_sidebar_net_is_a_config_error_not_torchs_storage_overflow(no_trace):
    from resviz.inputs import budget

    cfg = sidebar_config(26)  # its last stage: 16 x 2^25 = 536,870,912 channels
    for check in (models.check_config, budget.check_model):
        with pytest.raises(ConfigError, match=r"^This model has 26 stages; at most 8 are accepted"):
            check(cfg)


def test_without_the_check_torch_overflows_on_the_26_stage_net(monkeypatch):
    """The failure the issue saw (on the meta device: no memory is taken); check_config is what stands before it."""
    monkeypatch.setattr(models, "check_config", lambda cfg: None)
    with pytest.raises(RuntimeError, match="Storage size calculation overflowed"):
        models.ResNet(sidebar_config(26), device="meta")


def test_a_300_kb_blocks_per_stage_text_is_refused_from_its_length_alone(no_trace):
    from resviz.inputs import budget

    n = 100_000  # "2, " x 100,000 is 300 kB of text
    cfg = models.ResNetConfig(layers=Untouchable((2,) * n), widths=Untouchable((16,) * n))
    for check in (models.check_config, budget.check_model):
        with pytest.raises(ConfigError, match=r"100,000 stages; at most 8"):
            check(cfg)


@pytest.mark.parametrize("cfg, words", [
    (sidebar_config(8, base=1024), r"a layer of 131,072 channels; at most 65,536"),  # 1024 x 2^7
    (sidebar_config(3, input_size=5000), r"at most 4,096 pixels a side .* not 5,000"),
    (sidebar_config(3, num_classes=10**9), r"classes at most 100,000, not .*1,000,000,000"),
    (models.ResNetConfig(block="bottleneck", widths=(64, 128, 256, 2**15)), r"131,072 channels"),  # x4 expansion
    (models.ResNetConfig(block="bottleneck", groups=2**20, width_per_group=4), r"not 4,194,304"),  # 64 x 4/64 x 2^20
    (models.ResNetConfig(block="bottleneck", widths=(8, 16, 32, 64), width_per_group=4), r"inner width .* 1 to"),
    (models.ResNetConfig(block="bottleneck", width_per_group=10**400), r"inner width"),  # no float overflow
    (models.ResNetConfig(stem_width=10**30), r"1,000,000,000,000,000,000,000,000,000,000 channels"),
])
def test_channels_input_and_classes_are_bounded_before_anything_is_traced(cfg, words, no_trace):
    from resviz.inputs import budget

    with pytest.raises(ConfigError, match=words):
        budget.check_model(cfg)


def test_every_preset_and_the_sidebars_widest_net_pass_the_config_limits():
    for cfg in models.PRESETS.values():
        models.check_config(cfg)
    models.check_config(sidebar_config(8, base=512))  # 512 x 2^7 = 65,536 channels: the limit itself
