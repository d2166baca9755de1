"""Shortcut lab: why x + F(x) needs equal shapes, and how zero-padding or a 1x1 convolution makes them equal."""
import pandas as pd
import pyarrow as pa
import streamlit as st

from resviz import ui
from resviz.lessons import shortcut_lab as sc
from resviz.plots import shortcut_lab as plots
from resviz.trace import fmt_shape, trace_shapes


def _shared(fn, *args, label=""):
    """``fn(*args)``, computed once for the whole class."""
    return ui.shared_result((fn.__name__, *args), lambda _: fn(*args), label)


NUMBERS = {k: st.column_config.NumberColumn(format="localized") for k in ("parameters", "MACs")}
INPUTS = {"sl_cin": ("Input channels", 0, sc.MAX_CHANNELS, 4), "sl_cout": ("Output channels", 0, sc.MAX_CHANNELS, 8),
          "sl_stride": ("Stride", 1, 8, 2), "sl_h": ("Height", 0, sc.MAX_SIDE, 6), "sl_w": ("Width", 0, sc.MAX_SIDE, 6)}


def _fixes_frame(lab) -> pd.DataFrame:
    """The fixes' table, its counts written with thousands separators (a pandas Styler cost each follower's rerun of
    this page more than all its charts: thirty reruns at once when the teacher changes a setting)."""
    table = pd.DataFrame(sc.fix_table(lab)).set_index("fix")
    return table.assign(**{c: table[c].map("{:,}".format) for c in ("parameters", "MACs")})


@st.cache_resource(max_entries=64)
def _arrow(key: tuple, _make) -> pa.Table:
    """``_make()``'s DataFrame as an Arrow table, made once for the class (``key`` says all it shows): thirty
    followers rerun at once converted the same tables, a tenth of their reruns' time."""
    return pa.Table.from_pandas(_make())


def _use_block(blocks):
    st.session_state.update(zip(INPUTS, sc.block_inputs(blocks[st.session_state["sl_block"]])), sl_row=0, sl_col=0)


st.title("Shortcut lab: making x fit F(x)")
sel = ui.current_selection()
cfg, device = sel.chosen, sel.device
# each default is the widget's own (not set into session_state): a link or a follower's view without a setting means
# that default, and Streamlit writes every other value into the URL
c_in, c_out, stride, h, w = (col.number_input(label, lo, hi, default, key=k, bind="query-params")
                              for col, (k, (label, lo, hi, default)) in zip(st.columns(5), INPUTS.items()))
picker = None  # the block picker: under the fixes, where the lab has drawn them

with ui.friendly_errors("Running the shortcut lab"):
    lab = _shared(sc.compare_fixes, c_in, c_out, stride, h, w, 0, device, label="Running F(x) and the fixes…")
    st.subheader("1 · The naive addition: F(x) + x")  # the verdict, then the fixes' table: the first screen
    naive, shapes = lab.naive, f"x is {fmt_shape(lab.x_shape)}, F(x) is {fmt_shape(lab.fx_shape)}"
    (st.success if naive.ok and not naive.broadcast else st.warning)(sc.mismatch_text(naive))
    with st.expander(f"{shapes}{': what PyTorch says' if naive.error else ''}", key="sl_naive"):
        st.markdown(f"x is **{fmt_shape(lab.x_shape)}**, F(x) is **{fmt_shape(lab.fx_shape)}** "
                    f"(channels × height × width).")
        if naive.error:
            st.markdown("PyTorch refuses. Its own error message:")
            st.code(f"RuntimeError: {naive.error}", language=None)

    st.subheader("2 · The fixes, each run on x")
    st.table(_arrow(("sl_fixes", c_in, c_out, stride, h, w, device), lambda: _fixes_frame(lab)), hide_index=False)
    st.markdown(sc.fixes_text(lab, c_out))
    picker = st.container()  # the block picker, drawn below

    st.subheader("3 · What a 1x1 convolution is")
    oh, ow = lab.fx_shape[1:]
    for k, n in (("sl_row", oh), ("sl_col", ow)):  # keep the picked pixel inside a smaller output
        st.session_state[k] = min(st.session_state.get(k, 0), n - 1)
    pc = st.columns(2)
    row = pc[0].slider("Output row", 0, max(oh - 1, 1), key="sl_row", bind="query-params", disabled=oh < 2)
    col = pc[1].slider("Output column", 0, max(ow - 1, 1), key="sl_col", bind="query-params", disabled=ow < 2)
    args = (c_in, c_out, stride, h, w, row, col, 0, device)
    p = _shared(sc.pixel_product, *args)
    st.plotly_chart(ui.figure(("sl_product", *args), lambda: plots.plot_pixel_product(p)), key="sl_product")
    st.markdown(sc.pixel_text(p, c_in, c_out))
    st.markdown("A 1x1 convolution looks at **one pixel at a time**: it multiplies that pixel's vector of "
                "channel values by a C_out × C_in weight matrix. The same matrix is used at every pixel. "
                "Above: option B's convolution, for the output pixel you pick.")
    st.plotly_chart(ui.figure(("sl_kept", *args), lambda: plots.plot_kept_pixels(p.kept, p.in_pixel, stride)),
                    key="sl_kept")
    st.caption(f"With stride {stride} the 1x1 convolution reads one pixel in {stride} along each axis "
               f"and ignores the rest (grey); option A's subsampling keeps exactly the same pixels.")

with (picker or st.container()).expander(f"Pick a real block from the current model ({cfg.label}); what F(x) is here",
                                         key="sl_more"), ui.friendly_errors("Reading the model's blocks"):
    st.markdown("A residual block outputs **F(x) + x**. The addition works element by element, so F(x) and x need "
                "the *same* shape (channels × height × width). Where a block changes the channel count or uses a "
                "stride, they differ. Set the shapes above and see what breaks, and how each fix repairs it.")
    st.caption("F(x) here is a 3x3 convolution (with this stride) + batch norm: like a block's first layer, it sets "
               "the output channels and size. Every number on this page is computed from real tensors and modules.")
    blocks = _shared(trace_shapes, cfg, label="Reading the blocks…").blocks
    st.selectbox("Block", range(len(blocks)), format_func=lambda i: sc.block_label(blocks[i]), key="sl_block",
                 bind="query-params")
    st.button("Use this block's shapes", key="sl_use", on_click=_use_block, args=(blocks,))

st.subheader("4 · The bottleneck: 1x1 → 3x3 → 1x1")
bc = st.columns(3)
ch = bc[0].selectbox("Block channels", (64, 256, 512, 1024, 2048), index=1, key="sl_bn_ch", bind="query-params")
bstride = bc[1].radio("Stride", (1, 2), index=1, horizontal=True, key="sl_bn_stride", bind="query-params")
size = bc[2].selectbox("Input size", (7, 14, 28, 56), index=3, key="sl_bn_size", bind="query-params")
with ui.friendly_errors("Measuring the bottleneck"):
    costs = _shared(sc.bottleneck_costs, ch, bstride, size)
    st.plotly_chart(ui.figure(("sl_bn", ch, bstride, size), lambda: plots.plot_bottleneck_costs(costs)),
                    key="sl_bn_chart")
    st.markdown(f"A bottleneck first **reduces** {ch} channels to {ch // 4} with a 1x1 conv, runs the 3x3 on "
                f"those few channels, then **expands** back to {ch} with another 1x1. The chart compares it with two "
                f"3x3 convs at {ch} channels (the real modules, measured on a {ch}×{size}×{size} input).")
    for i, design in enumerate(costs[:2]):
        st.markdown(f"**{design.name}**")
        rows = _arrow(("sl_layers", ch, bstride, size, i), lambda d=design: pd.DataFrame(sc.layer_table(d.rows)))
        st.dataframe(rows, hide_index=True, column_config=NUMBERS)
    st.markdown(sc.STRIDE_PLACEMENT)
