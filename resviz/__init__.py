"""resviz: see how residual networks work.

    import resviz
    cfg = resviz.get_config("resnet50")          # or resviz.ResNetConfig(...) for a custom net
    model = resviz.build_model(cfg)              # torchvision-compatible module names
    plain = resviz.plain_twin(model)             # same layers, shortcut additions removed
    trace = resviz.trace_shapes(cfg)             # shapes, params, MACs, receptive field per layer
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
from resviz.trace import Trace, trace_shapes
from resviz.shortcuts import bottleneck_costs, compare_fixes, model_blocks, pixel_product

__all__ = [
    "CIFAR_PRESETS", "IMAGENET_PRESETS", "PRESETS", "ConfigError", "ResNet", "ResNetConfig",
    "build_model", "count_params", "get_config", "pick_device", "plain_config", "plain_twin",
    "Trace", "trace_shapes",
    "bottleneck_costs", "compare_fixes", "model_blocks", "pixel_product",
]
