"""Feature maps: a picture flows through the network; F(x), the shortcut x and their sum inside any block; why it
decided (top-5, Grad-CAM, Integrated Gradients, Occlusion), and the plain twin beside it."""
import streamlit as st

from resviz import ui
from resviz.inputs import budget, images, limits, weights
from resviz.lessons import feature_maps as fm
from resviz.pair import fingerprint
from resviz.plots import feature_maps as plots

Source = fm.WeightsSource
SOURCE_LABELS = {Source.PRETRAINED: "ImageNet weights (torchvision)", Source.TRAINED: "Trained on the Training race",
                 Source.RANDOM: "Random (untrained)", Source.UPLOAD: "Upload a state dict (.pt/.pth)"}


def weights_ui(sel: ui.Selection) -> fm.LoadedWeights:
    """Weights picker (radio, download button, uploader); any problem is a message and random weights."""
    pair = st.session_state.get("trained")  # a TrainedPair, written by the Training race
    source = st.radio("Weights", fm.sources(sel.chosen, pair), format_func=lambda s: SOURCE_LABELS[Source(s)],
                      key="fm_source", help="ImageNet weights exist only for the ImageNet presets in the sidebar.")
    up = source is Source.UPLOAD and st.file_uploader(
        "State dict saved with torch.save(model.state_dict(), …)", type=["pt", "pth"], key="fm_weights_file",
        max_upload_size=limits.WEIGHTS_MB)
    req = fm.WeightsRequest(source, sel.chosen, sel.device, pair, sel.plain, (up.name, up.getvalue()) if up else None)
    try:
        if source is Source.PRETRAINED and not fm.imagenet_downloaded(sel.chosen) and st.button(
                "Download the ImageNet weights", key="fm_download"):
            with st.spinner("Downloading torchvision's ImageNet weights…"):
                fm.download_imagenet(sel.chosen)
        if req.ready:
            return ui.held(req.owned, "fm_weights", req.key, lambda: fm.load(req))
    except weights.WeightsError as e:
        st.error(f"{e} Using random weights instead.")
    return fm.random(sel.chosen, ui.load_model(sel.chosen, sel.device))


sel = ui.current_selection()
st.title("Feature maps: a picture inside the network")
top_notice = st.container()
pic_col, up_col, w_col, block_col = st.columns([3, 3, 3, 3])
upload = up_col.file_uploader("…or upload a photo", type=images.UPLOAD_TYPES, key="fm_upload",
                              max_upload_size=limits.IMAGE_MB)
samples = images.sample_names()
sample = pic_col.selectbox("Picture", samples, samples.index("cat") if "cat" in samples else 0, key="fm_sample",
                           disabled=upload is not None, help="Photos: public domain or CC0, sources in "
                           "assets/samples/ATTRIBUTION.md. Patterns: drawn by resviz. Remove an upload to use them.")
with w_col:
    w = weights_ui(sel)
    st.caption(f"Model: **{w.cfg.label}** with {w.label}.")
if w.untrained:
    top_notice.warning(fm.untrained_note(sel.chosen), icon=":material/warning:")
if other := fm.other_model_note(w, sel.chosen):
    top_notice.info(other, icon=":material/info:")
cfg, device, pre = w.cfg, sel.device, w.preprocess()
data = upload.getvalue() if upload is not None else images.sample_bytes(sample)
try:
    pic = ui.shared_result(("fm_picture", fingerprint(data), pre, cfg.in_channels, device),
                           lambda _: fm.picture(data, pre, cfg.in_channels, device), "Reading the picture…")
except images.ImageError as e:
    st.error(f"{e}")
    st.stop()
names = w.model.block_names()
block = block_col.selectbox("Block to look inside", range(len(names)), format_func=names.__getitem__, key="fm_block")
k = block_col.slider("Channels shown", 1, fm.MAX_CHANNELS, 9, key="fm_k",
                     help="The most active channels of the block's output, most active first.")
views, (top_col, cam_col, norm_col) = st.container(), st.columns(3)
cam_block = cam_col.selectbox("Grad-CAM block", range(len(names)), index=len(names) - 1, format_func=names.__getitem__,
                              key="fm_cam_block")
choice = cam_col.selectbox("Explain which class", ["predicted", *range(cfg.num_classes)], key="fm_target",
                           format_func=lambda c: "the predicted one" if c == "predicted" else f"{c}: {w.class_name(c)}")

with st.expander("Preprocessing: what the network really sees", key="fm_pre", on_change="rerun"):  # stays open
    st.plotly_chart(ui.figure(pic.key, lambda: plots.plot_preprocessing(pic.steps)), key="fm_pre_fig")
    st.caption(fm.preprocessing_note(pre))


def capture(model, target: int | None):
    """One forward and Grad-CAM of the picture, shared by the class: (its key, the ``fm.Capture`` or None while the
    background computes it)."""
    key = ("fm", w.key, model.cfg.residual, pic.key, block, cam_block, target)
    return key, ui.background_result(key, lambda _: fm.capture(model, pic.x, block, cam_block, target),
                                     "Running the picture through the network…")


with ui.friendly_errors("Computing the feature maps"):
    budget.check_model(w.cfg, 4, "Feature maps", nets=2)  # batch 4: Integrated Gradients' chunk; refused with numbers
    with views:  # while the maps are computed, their progress stands where they will be
        rk, r = capture(w.model, None if choice == "predicted" else int(choice))
    if r is None:
        st.stop()  # the first screen is drawn; the page reruns when the maps are ready
    views.subheader(fm.views_heading(r, k))
    figs = ui.figure((rk, k), lambda: plots.plot_block_views(r, k, 330))
    for i, (col, fig) in enumerate(zip(views.columns(3), figs)):
        col.plotly_chart(fig, key=f"fm_view_{i}")
    views.caption(fm.VIEWS_NOTE)
    top_col.plotly_chart(ui.figure((rk, "top"), lambda: plots.plot_prediction(r.probs, w.class_names, w.untrained,
                                                                               cfg.residual)), key="fm_top")
    if not w.class_names:
        top_col.caption("These weights come without class names: the classes are numbered.")
    cam_col.plotly_chart(ui.figure((rk, "cam"), lambda: plots.plot_overlay(
        pic.cropped, r.cam, f"Grad-CAM at {r.cam_block}: '{w.class_name(r.target)}'")), key="fm_cam")
    norm_col.plotly_chart(ui.figure((rk, "norms"), lambda: plots.plot_block_norms(r.norms, r.block)), key="fm_norms")
    norm_col.caption(fm.NORMS_NOTE)

    if cfg.residual and st.toggle("Compare with the plain twin (same layers, shortcuts removed)", key="fm_plain"):
        plain = ui.held(w.owned, "fm_plain", (w.key, device), lambda: fm.plain_model(w, device))
        pk, p = capture(plain, r.target)
        if p is not None:
            a, b = st.columns(2)
            a.plotly_chart(ui.figure((pk, k), lambda: plots.plot_block_views(p, k, 330)[-1]), key="fm_plain_view")
            b.plotly_chart(ui.figure((pk, "cam"), lambda: plots.plot_overlay(
                pic.cropped, p.cam, f"Plain twin: Grad-CAM at {p.cam_block}")), key="fm_plain_cam")
            st.caption(fm.plain_twin_caption(p, w))

    st.subheader("Other attributions (captum)")
    cols = st.columns(2)
    steps_ig = cols[0].slider("Integrated Gradients steps", 8, 64, 16, 8, key="fm_ig_steps")
    for col, kind in zip(cols, fm.Attribution):  # a map is shown only for the settings it was computed with
        key = ("fm_attr", kind, w.key, pic.key, r.target, steps_ig if kind is fm.Attribution.IG else None)
        with col:
            a = ui.asked_result(f"Run {kind.value}", f"fm_{kind.name.lower()}_run", key, lambda progress: fm.attribute(
                kind, w.model, pic.x, r.target, steps_ig, progress), fm.ATTRIBUTION_LABELS[kind])
        if a is not None:
            col.plotly_chart(ui.figure(key, lambda: plots.plot_overlay(pic.cropped, a.heat, a.title, signed=True)),
                             key=f"fm_{kind.name.lower()}_fig")
            if a.note:
                col.caption(a.note)
