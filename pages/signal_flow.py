"""Signal flow: activation and gradient norms layer by layer, a ResNet against its plain twin."""
from dataclasses import replace

import streamlit as st

from resviz.inputs import images, limits
from resviz import models, ui
from resviz.lessons import signal_flow as stats
from resviz.plots import signal_flow as plots

DEPTHS = (8, 14, 20, 32, 44, 56, 110, 164, 218, 326)  # 6k+2 layers; the paper's CIFAR nets go to 110, beyond is custom
INITS = {"kaiming": "Kaiming (default)", "default": "PyTorch defaults", "xavier": "Xavier",
         "zero_last_bn": "Zero last BN"}
SOURCES = ("CIFAR family: pick the depth", "The sidebar model")


@st.cache_data(max_entries=16, show_spinner=False)
def measure(cfg, device, init, steps, lr, batch, image):
    """Both nets' statistics for one configuration (numpy/dicts only), shared by every student."""
    bar = st.progress(0.0, text="Measuring…")  # updated each step: the page's Stop button works in between
    try:
        x, y = stats.image_batch(image, cfg) if image is not None else stats.sample_batch(cfg, batch)
        return stats.compare_signal_flow(cfg, x, y, device, init, steps, lr,
                                         progress=lambda done, total, what: bar.progress(done / total, text=what))
    finally:
        bar.empty()


st.title("Signal flow: ResNet against its plain twin")
st.markdown("The same batch goes forward through a ResNet and through its **plain twin** (the same layers with the "
            "same starting weights, without the shortcut additions); the loss gradient then flows back. Each chart "
            "shows one number per weighted layer, input on the left, for both networks, on a log scale.")
sel = ui.current_selection()
device = sel.device
c1, c2, c3, c4 = st.columns(4)
source = c1.radio("Network", SOURCES, key="sf_source")
depth = c2.select_slider("Depth (layers)", DEPTHS, value=20, key="sf_depth", disabled=source != SOURCES[0],
                         help="CIFAR ResNets have 6k+2 weighted layers: 3 stages of k basic blocks.")
bn = c3.toggle("Batch norm", value=True, key="sf_bn", help="Off: every BN layer becomes the identity.")
init = c4.selectbox("Initialization", list(INITS), format_func=INITS.get, key="sf_init")
if source == SOURCES[0]:
    k = (depth - 2) // 6
    cfg = replace(models.get_config("resnet20"), layers=(k, k, k), norm=bn, name=f"resnet{depth}")
else:
    cfg = replace(sel.cfg, norm=bn)
c1, c2, c3, c4 = st.columns(4)
use_image = c1.radio("Input", ("Built-in batch", "Upload an image"), key="sf_input") != "Built-in batch"
batch, image = 8, None
if use_image:
    upload = c2.file_uploader(f"PNG or JPEG, up to {limits.IMAGE_MB} MB", type=["png", "jpg", "jpeg"],
                              key="sf_upload", max_upload_size=limits.IMAGE_MB)
    image = upload.getvalue() if upload is not None else None
    batch = 1 if image is not None else batch
    if image is None:
        c2.info("No image yet: using the built-in batch.")
else:
    most = 32 if cfg.input_size <= 64 else 8  # ImageNet-size inputs: a few images already take seconds on a CPU
    batch = c2.slider("Batch size", 2, most, 8, key="sf_batch", help="Fixed random images (seed 0) and labels.")
steps = c3.slider("Training steps before measuring", 0, 100, 0, key="sf_steps",
                  help="0 = at initialization. Each net gets this many plain SGD steps on the batch, on a copy.")
lr = c4.select_slider("Learning rate", (0.001, 0.003, 0.01, 0.03, 0.1), value=0.01, key="sf_lr",
                      disabled=steps == 0)

st.caption(f"Initialization: {stats.INITS[init]}.  \n**{cfg.label}** ({cfg.depth} layers, batch norm "
           f"{'on' if bn else 'off'}) and its plain twin on `{device}`; input: "
           f"{'your image (a batch of 1)' if image is not None else f'{batch} fixed random images'}.")

result = None
with ui.friendly_errors("Measuring the signal flow"):
    try:
        result = measure(cfg, device, init, steps, lr, batch, image)
    except images.ImageError as e:
        st.error(f"That image cannot be used: {e}")
if result is None:
    st.stop()
for key, step in result["diverged"].items():
    if step:
        st.warning(f"The {'ResNet' if key == 'resnet' else 'plain twin'}'s training diverged at step {step} "
                   "(the loss became inf or NaN); its charts show what is left. Try a smaller learning rate.")
st.subheader("What the charts show")
st.markdown("\n".join(f"- {line}" for line in stats.explain_signal_flow(result)))

tabs = st.tabs(["Forward: activations", "Backward: gradients", "Weight gradients", "Fig. 7: 3x3 responses"]
               + (["Training loss"] if steps else []))
with tabs[0]:
    st.plotly_chart(plots.plot_layer_stat(result, "act_norm"), key="sf_chart_act")
    st.plotly_chart(plots.plot_layer_stat(result, "act_std"), key="sf_chart_std")
with tabs[1]:
    st.plotly_chart(plots.plot_layer_stat(result, "grad_norm"), key="sf_chart_grad")
with tabs[2]:
    st.plotly_chart(plots.plot_layer_stat(result, "weight_grad_norm"), key="sf_chart_wgrad")
with tabs[3]:
    st.markdown(stats.explain_responses(result))
    st.plotly_chart(plots.plot_responses(result), key="sf_chart_resp")
if steps:
    with tabs[4]:
        st.plotly_chart(plots.plot_losses(result), key="sf_chart_loss")
with st.expander("Every number, layer by layer (means over all elements; norms per example)"):
    st.dataframe(stats.stats_table(result), key="sf_table")
st.caption("Statistics come from forward hooks and gradient hooks that are removed after one pass; the models are "
           "built fresh for this page (seed 0), never the shared one. Layer outputs are conv outputs before BN.")
