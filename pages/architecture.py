"""Architecture: the chosen network as a graph, its tensor shapes, and where shortcuts need a projection."""
import inspect

import pandas as pd
import streamlit as st

from resviz import models, ui
from resviz.lessons.architecture import mismatch_text, shortcut_label
from resviz.plots.architecture import layout_graph, plot_architecture
from resviz.trace import TABLE_COLUMNS, ShortcutKind, fmt_shape

st.title("Architecture")
sel = ui.current_selection()
plain = st.toggle("Show the plain twin (shortcut additions removed)", value=sel.plain, key="arch_plain")
cfg = models.with_shortcuts(sel.cfg, residual=not plain)
trace = ui.cached_trace(cfg)

if trace.error:
    st.error(f"This configuration cannot run. {trace.error}")
    if trace.failed_layer:
        st.caption(f"Traced {len(trace.rows)} layers before `{trace.failed_layer}`; they are listed below.")
else:
    c = st.columns(5)
    c[0].metric("Parameters", f"{trace.total_params:,}")
    c[1].metric("Multiply-accumulates", f"{trace.total_macs / 1e9:.3f} G")
    c[2].metric("Weighted layers", cfg.depth)
    c[3].metric("Output", fmt_shape(trace.output_shape))
    rf = max(r["receptive_field"] for r in trace.rows if r["op"] not in ("avgpool", "fc"))
    c[4].metric("Receptive field", f"{rf} px",
                help="Input pixels that can influence one output of the last conv layer (before pooling).")

expanding = next((b for b in trace.blocks if b.type == "Bottleneck"), None)
if expanding:
    w, out = expanding.channels[2:]
    st.info(f"**Bottleneck:** in `{expanding.name}` a 1x1 conv squeezes the input to {w} channels, the 3x3 conv "
            f"works on those {w}, and the last 1x1 conv expands them to {out} ({out // w}x). Every bottleneck "
            "does this: the expensive 3x3 runs on few channels.")
projections = [b for b in trace.blocks if b.shortcut in (ShortcutKind.ZERO_PAD, ShortcutKind.PROJECTION)]
if projections:
    st.warning("**Where x cannot be added as it is:**\n" + "\n".join(
        f"- `{b.name}`: {fmt_shape(b.in_shape)} → {fmt_shape(b.out_shape)} because {mismatch_text(b)}; "
        f"the shortcut is a **{shortcut_label(b)}**." for b in projections))
elif not cfg.residual:
    st.caption("The plain twin has no shortcuts: nothing is added, so no shapes need to match.")

stages = list(dict.fromkeys(b.stage for b in trace.blocks))
expand = st.segmented_control("Show layers of", ["blocks only", *stages, "all"], default="blocks only",
                              key="arch_expand") or "blocks only"
fig = plot_architecture(layout_graph(trace, "all" if expand == "all" else {expand}), cfg.label)
st.plotly_chart(fig, width="stretch", key="arch_graph")
st.caption("Hover a node for its shapes, parameters and MACs; hover the small dot on an edge for the tensor it "
           "carries. Green arcs are identity shortcuts, orange projection (1x1 conv), pink zero-padding.")

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
