"""resviz: see how residual networks work.

    import resviz
    cfg = resviz.get_config("resnet50")          # or resviz.ResNetConfig(...) for a custom net
    model = resviz.build_model(cfg)              # torchvision-compatible module names
    plain = resviz.plain_twin(model)             # same layers, shortcut additions removed
    trace = resviz.trace_shapes(cfg)             # shapes, params, MACs, receptive field per layer
    stats = resviz.collect_stats(model.train(), x, y)  # per-layer activation/gradient norms (hooks, any model)
"""
from resviz.models import (
    CIFAR_PRESETS,
    IMAGENET_PRESETS,
    PRESETS,
    ConfigError,
    ResNet,
    ResNetConfig,
    build_model,
    count_params,
    get_config,
    pick_device,
    plain_config,
    plain_twin,
)
from resviz.trace import Block, ShortcutKind, Trace, trace_shapes
from resviz.lessons.shortcut_lab import bottleneck_costs, compare_fixes, pixel_product
from resviz.lessons.lesion import lesion_study
from resviz.lessons.paths import gradient_by_path_length, path_counts, path_length_distribution
from resviz.lessons.shattered import SweepConfig, shattered_sweep
from resviz.lessons.landscape import loss_grid, random_direction
from resviz.lessons.signal_flow import apply_init, collect_stats, compare_signal_flow, sample_batch
from resviz.lessons.training import RaceConfig, default_race, make_race_models, race, race_margins

__all__ = [
    "CIFAR_PRESETS", "IMAGENET_PRESETS", "PRESETS", "ConfigError", "ResNet", "ResNetConfig",
    "build_model", "count_params", "get_config", "pick_device", "plain_config", "plain_twin",
    "Block", "ShortcutKind", "Trace", "trace_shapes",
    "bottleneck_costs", "compare_fixes", "pixel_product",
    "lesion_study", "gradient_by_path_length", "path_counts", "path_length_distribution",
    "SweepConfig", "shattered_sweep", "loss_grid", "random_direction",
    "apply_init", "collect_stats", "compare_signal_flow", "sample_batch",
    "RaceConfig", "default_race", "make_race_models", "race", "race_margins",
]
