"""Architecture: the chosen network as a graph, its tensor shapes, and where shortcuts need a projection."""
import inspect

import pandas as pd
import streamlit as st

from resviz import models, ui
from resviz.lessons import architecture as arch
from resviz.plots.architecture import layout_graph, plot_architecture
from resviz.trace import TABLE_COLUMNS, fmt_shape, trace_shapes

st.title("Architecture")
sel = ui.current_selection()
if "arch_plain" not in st.session_state or st.session_state.get("arch_sidebar_plain") != sel.plain:
    st.session_state["arch_plain"] = st.session_state["arch_sidebar_plain"] = sel.plain  # follow the sidebar's twin
toggle_col, expand_col = st.columns([1.3, 3.7], vertical_alignment="bottom")  # the controls: one row
plain = toggle_col.toggle("Plain twin", key="arch_plain", bind="query-params",
                          help="The same network with the shortcut additions removed.")
cfg = models.with_shortcuts(sel.cfg, residual=not plain)
trace = ui.shared_result(("trace_shapes", cfg), lambda _: trace_shapes(cfg), "Tracing the shapes…")
stages = list(dict.fromkeys(b.stage for b in trace.blocks))
expand = expand_col.segmented_control("Show layers of", ["blocks only", *stages, "all"], default="blocks only",
                                      format_func=lambda o: "blocks" if o == "blocks only" else o,  # ResNet-50's fit
                                      key="arch_expand") or "blocks only"

# the verdict (where x cannot be added as it is, or why it cannot run), then the graph: the first screen
if trace.error:
    st.error(f"This configuration cannot run. {trace.error}")
    if trace.failed_layer:
        st.caption(f"Traced {len(trace.rows)} layers before `{trace.failed_layer}` (marked on the graph); "
                   "they are listed below.")
if idle := arch.idle_stride_text(trace):
    st.warning(idle)
if reshaping := arch.reshaping_text(trace):
    st.warning(reshaping)
elif not cfg.residual:
    st.caption("The plain twin has no shortcuts: nothing is added, so no shapes need to match.")
fig = ui.figure(("arch_graph", cfg, expand),
                lambda: plot_architecture(layout_graph(trace, "all" if expand == "all" else {expand}), cfg.label))
st.plotly_chart(fig, width="stretch", key="arch_graph")
st.caption("Each shortcut runs below the main path F(x) to the addition ⊕: green the identity (x as it is), orange "
           "a 1x1 projection, dashed magenta zero-padding. Long stages fold their identical blocks. Hover a node for "
           "its shapes, parameters and MACs, the small dot on an edge for the tensor it carries.")
if not trace.error:
    with st.container(horizontal=True, gap="small"):  # each number whole (one row at 1280 px), wrapping if need be
        st.metric("Parameters", f"{trace.total_params:,}", width="content")
        st.metric("Multiply-accumulates", f"{trace.total_macs / 1e9:.3f} G", width="content")
        st.metric("Weighted layers", cfg.depth, width="content")
        st.metric("Output", fmt_shape(trace.output_shape), width="content")
        st.metric("Receptive field (theoretical)", f"{arch.receptive_field(trace).px} px", width="content")
if bottlenecks := arch.bottlenecks(trace):
    st.info(arch.bottleneck_text(bottlenecks))
if not trace.error:
    placement, resnet = (ui.shared_result(("stride_placement", c), lambda _, c=c: arch.stride_placement(c),
                                          "Counting…") for c in (cfg, sel.cfg))
    notes = [arch.macs_text(cfg, trace.total_macs, placement, resnet),
             arch.receptive_field_text(arch.receptive_field(trace))]
    st.caption(" ".join(n for n in notes if n))

st.subheader("Layer table")
table = pd.DataFrame(trace.rows, columns=TABLE_COLUMNS)
for col in ("in_shape", "out_shape"):
    table[col] = table[col].map(fmt_shape)
st.dataframe(table, hide_index=True, width="stretch", key="arch_table")
st.download_button("Download the table as CSV", trace.to_csv(), f"{cfg.label.replace(' ', '_')}.csv",
                   "text/csv", key="arch_csv")
st.caption("MACs count convolutions and the fully connected layer, as torchvision's published GFLOPS do.")

with st.expander("The code of one block (resviz/models.py)"):
    block_cls = models.Bottleneck if cfg.block == "bottleneck" else models.BasicBlock
    st.code(inspect.getsource(block_cls.forward), language="python")
