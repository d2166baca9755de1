"""Signal flow: how the signal and its gradient travel through a ResNet and its plain twin, layer by layer."""
import streamlit as st

from resviz import ui
from resviz.inputs import budget, limits
from resviz.lessons import signal_flow as sf
from resviz.pair import fingerprint
from resviz.plots import signal_flow as plots

INIT_LABELS = {sf.Init.KAIMING: "Kaiming (default)", sf.Init.DEFAULT: "PyTorch defaults", sf.Init.XAVIER: "Xavier",
               sf.Init.ZERO_LAST: "Zero last BN"}
LRS = (0.001, 0.003, 0.01, 0.03, 0.1)

st.title("Signal flow: ResNet vs plain")  # one line on a projector
sel = ui.current_selection()
c1, c2, c3, c4 = st.columns([2.2, 2.6, 3.4, 2.8])  # the main controls (one row), filled below; the rest folded
with st.expander("Learning rate, network, input and seed", key="sf_more"):
    e1, e2, e3, e4, c5 = st.columns(5)
    sidebar = e1.toggle("Use the sidebar's model", key="sf_sidebar", bind="query-params",
                        help="Off: the paper's CIFAR ResNet of the depth chosen beside.")
    source = sf.Input(e2.radio("Input", [i.value for i in sf.Input], key="sf_input", bind="query-params"))
    seed = e4.number_input("Seed", 0, 10_000, 0, key="sf_seed",
                           bind="query-params", help="Draws the weights, the images and the labels.")
depth = c1.select_slider("Depth (layers)", sf.DEPTHS, value=20, key="sf_depth", bind="query-params", disabled=sidebar,
                         help="CIFAR ResNets have 6k+2 weighted layers: 3 stages of k basic blocks.")
bn = c2.toggle("Batch norm", value=True, key="sf_bn",
               bind="query-params", help="Off: every BN layer becomes the identity.")
init = c3.selectbox("Initialization", list(sf.Init), format_func=INIT_LABELS.get, key="sf_init", bind="query-params")
steps = c4.slider("Training steps", 0, 100, 0, key="sf_steps", bind="query-params",
                  help="Before measuring; 0 = at initialization. Each net gets this many plain SGD steps on the batch, on a copy.")
lr = c5.select_slider("Learning rate", LRS, value=0.01, key="sf_lr", bind="query-params", disabled=steps == 0)
cfg, image = sf.chosen_config(depth, bn, sel.cfg if sidebar else None), None
batch = 1
if source is sf.Input.IMAGE:
    upload = e3.file_uploader(f"PNG or JPEG, up to {limits.IMAGE_MB} MB", type=["png", "jpg", "jpeg"],
                              key="sf_upload", max_upload_size=limits.IMAGE_MB)
    image = upload.getvalue() if upload is not None else None
    if image is None:
        e3.info("No image yet: using the built-in batch.")
if image is None:
    batch = e3.slider("Batch size", 2, sf.max_batch(cfg), 8, key="sf_batch",
                      bind="query-params", help="Random images and labels.")
settings = sf.Settings(cfg, init, steps, lr, batch, int(seed))

result, key = None, ("signal_flow", settings, sel.device, image and fingerprint(image))
with ui.friendly_errors("Measuring the signal flow"):
    budget.check_model(cfg, 1 if image is not None else batch, "Signal flow", nets=2)  # refused with numbers
    result = ui.background_result(key, lambda progress: sf.measure(settings, image, sel.device, progress),
                                  "Measuring both networks…")
if result is None:
    ui.stop_page()
for text in sf.warnings(result):
    st.warning(text)
lines = sf.explain_signal_flow(result)
headline = lines.pop(len(sf.explain_nets(result))) if len(lines) > len(sf.explain_nets(result)) else None
if headline:  # what the charts show, in one sentence, above them: the first screen holds it and the charts
    st.info(headline)
left, right = st.columns(2)
left.plotly_chart(ui.figure((key, "act"), lambda: plots.plot_layer_stat(result, "act_rms")), key="sf_chart_act")
right.plotly_chart(ui.figure((key, "grad"), lambda: plots.plot_layer_stat(result, "grad_rms")), key="sf_chart_grad")
if verdict := sf.loss_verdict(result):
    getattr(st, verdict[0].value)(verdict[1])
st.caption("The same batch goes forward through a ResNet and its **plain twin** (the same layers and starting weights, "
           "without the shortcut additions), then the loss gradient flows back: one point per conv layer. "
           + sf.describe(result, uploaded=image is not None))
st.subheader("What the charts show")
st.markdown("\n".join(f"- {line}" for line in lines))
st.caption("RMS: the root mean square of every number in the tensor (the batch × channels × positions), so that "
           "layers of different sizes compare like with like. The average pool and the classifier are left out. "
           "Layer outputs are conv outputs before BN; the loss is the cross-entropy averaged over the batch.")

names = ["Weight gradients", "Fig. 7: 3x3 responses", "Every number"] + (["Training loss"] if steps else [])
tabs = st.tabs(names)
tabs[0].plotly_chart(ui.figure((key, "wgrad"), lambda: plots.plot_layer_stat(result, "weight_grad_rms")),
                     key="sf_chart_wgrad")
tabs[1].markdown(sf.explain_responses(result))
tabs[1].plotly_chart(ui.figure((key, "resp"), lambda: plots.plot_responses(result)), key="sf_chart_resp")
tabs[2].caption("One row per weighted layer (the classifier too). RMS, mean and std over the batch and every channel "
                "and position of the layer's output; ∂loss/∂weight RMS over the layer's weights.")
tabs[2].dataframe(sf.stats_table(result), key="sf_table")
if steps:
    tabs[3].plotly_chart(ui.figure((key, "loss"), lambda: plots.plot_losses(result)), key="sf_chart_loss")
st.caption("Statistics come from forward and gradient hooks that are removed after one pass; both networks are "
           "built fresh for this page from the seed, never the shared model.")
