"""Shape trace of ResNet-152 at 224x224 against one real CPU forward pass at batch 1; figure size of the page."""
import torch

from resviz.bench import best_of
from resviz.models import build_model, get_config
from resviz.plots.architecture import layout_graph, plot_architecture
from resviz.trace import skeleton, trace_shapes


def run() -> list[dict]:
    cfg = get_config("resnet152")
    model = build_model(cfg).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        fwd = best_of(lambda: model(x), repeat=5, warmup=2)

    def cold():
        skeleton.cache_clear()
        trace_shapes(cfg)

    cold_s = best_of(cold, repeat=5)
    warm_s = best_of(lambda: trace_shapes(cfg), repeat=5)
    trace = trace_shapes(cfg)
    sizes = {view: len(plot_architecture(layout_graph(trace, view)).to_json().encode())
             for view in ((), "all")}
    return [
        dict(figure="shape trace ResNet-152 @224 (skeleton built) / one CPU forward, batch 1", baseline="torch forward",
             value=cold_s / fwd, unit="x", target="<= 0.25", ok=cold_s / fwd <= 0.25),
        dict(figure="shape trace ResNet-152 @224 (skeleton cached) / one CPU forward, batch 1", baseline="torch forward",
             value=warm_s / fwd, unit="x", target="<= 0.25", ok=warm_s / fwd <= 0.25),
        dict(figure="one CPU forward ResNet-152 @224, batch 1", baseline="-", value=fwd * 1000, unit="ms",
             target="report", ok=None),
        dict(figure="Architecture figure for ResNet-152, blocks view", baseline="-", value=sizes[()] / 1e6, unit="MB",
             target="<= 1 MB", ok=sizes[()] <= 1e6),
        dict(figure="Architecture figure for ResNet-152, all layers", baseline="-", value=sizes["all"] / 1e6, unit="MB",
             target="<= 1 MB", ok=sizes["all"] <= 1e6),
    ]
