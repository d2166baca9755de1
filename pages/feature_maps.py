"""Feature maps: upload a picture and watch each block of the ResNet work on it; Grad-CAM, IG, Occlusion."""
import hashlib

import streamlit as st

from resviz.inputs import images, limits
from resviz import attribution, features, ui
from resviz.plots import features as plots

sel = ui.current_selection()
cfg, device = sel.chosen, sel.device
st.title("Feature maps: watch a picture flow through the network")
st.caption("Each residual block computes a correction F(x) and adds it to its input x: out = relu(F(x) + x). "
           "Here you see both parts and their sum for a picture of your choice.")

up_col, sample_col = st.columns(2)
upload = up_col.file_uploader("Upload a photo (JPEG, PNG, WebP, BMP)", type=images.UPLOAD_TYPES, key="fm_upload",
                          max_upload_size=limits.IMAGE_MB)
sample = sample_col.selectbox("…or use a sample picture", images.sample_names(), key="fm_sample",
                              help="Synthetic drawings made by resviz (assets/samples/make_samples.py), free to use.")
sample_col.caption("The samples are synthetic drawings, not photos.")
data = upload.getvalue() if upload is not None else images.sample_bytes(sample)
try:
    img = images.load_image(data)
except images.ImageError as e:
    st.error(f"{e}")
    st.stop()

w = ui.fm_weights_ui(cfg, device)
cfg = w["cfg"]
pre = images.preprocess_for(cfg.input_size, imagenet=w["imagenet"], resize=w["resize"])
steps = images.preprocess_steps(img, pre)
st.caption(f"Model: **{cfg.label}** with {w['label']}.")
with st.expander("Preprocessing: what the network really sees", expanded=True):
    st.plotly_chart(plots.plot_preprocessing(steps), key="fm_pre_fig")
    st.caption(f"Shorter side resized to {pre.resize} px, center {pre.crop}x{pre.crop} crop, then each channel "
               f"scaled to [0, 1] and normalized as (x - mean) / std with mean {pre.mean} and std {pre.std}.")

x = images.to_tensor(steps, device, cfg.in_channels)
image_key = hashlib.sha1(data).hexdigest()[:16] + f"|{pre}"
names = features.block_names(w["model"])
c1, c2, c3, c4 = st.columns(4)
block = c1.selectbox("Block to look inside", range(len(names)), format_func=names.__getitem__, key="fm_block")
k = c2.slider("Channels shown", 1, features.MAX_CHANNELS, 9, key="fm_k",
              help="The most active channels of the block's output, most active first.")
cam_block = c3.selectbox("Grad-CAM block", range(len(names)), index=len(names) - 1,
                         format_func=names.__getitem__, key="fm_cam_block")
classes = w["names"] or [f"class {i}" for i in range(cfg.num_classes)]
choice = c4.selectbox("Explain which class", ["predicted"] + list(range(len(classes))), key="fm_target",
                      format_func=lambda c: "the predicted class" if c == "predicted" else f"{c}: {classes[c]}")
target = None if choice == "predicted" else int(choice)

with ui.friendly_errors("Computing the feature maps"):
    r = ui.fm_capture(w["model"], w["key"], x, image_key, block, cam_block, target)
    st.subheader(f"Inside block {r['block']}: {r['n_channels']} channels, showing the {min(k, len(r['channels']))} most active")
    for col, fig in zip(st.columns(3), plots.plot_block_views(r, k)):
        col.plotly_chart(fig, key=f"fm_view_{fig.layout.title.text}")
    st.caption("Red = positive, blue = negative; each channel has one color scale shared by its views. "
               "Hover a map for the channel index and its value range.")
    st.plotly_chart(plots.plot_block_norms(r["norms"], r["block"]), key="fm_norms")
    st.caption("Where F(x) is much smaller than x, the block only nudges its input: the shortcut carries the signal.")

    top = features.top_k(r["probs"], w["names"])
    left, right = st.columns(2)
    left.plotly_chart(plots.plot_top_k(top, "Top-5 classes" + ("" if w["names"] else " (class numbers)")), key="fm_top")
    if not w["names"]:
        left.caption("Class names exist for ImageNet weights; random or uploaded weights give numbered classes.")
    right.plotly_chart(plots.plot_overlay(steps["cropped"], r["cam"], f"Grad-CAM at {r['cam_block']} for "
                                          f"'{classes[r['target']]}'"), key="fm_cam")

    if cfg.residual and st.toggle("Compare with the plain twin (same layers, shortcuts removed)", key="fm_plain"):
        p = ui.fm_capture(ui.fm_plain_model(w, w["key"], device), "plain|" + w["key"], x, image_key, block,
                          cam_block, r["target"])
        a, b = st.columns(2)
        a.plotly_chart(plots.plot_block_views(p, k)[-1], key="fm_plain_view")
        b.plotly_chart(plots.plot_overlay(steps["cropped"], p["cam"], f"Plain twin: Grad-CAM at {p['cam_block']}"),
                       key="fm_plain_cam")
        st.caption(f"Plain twin's top class: {features.top_k(p['probs'], w['names'], 1)[0]['name']}. Without the "
                   "shortcuts, weights trained with them no longer fit together.")

    st.subheader("Other attributions (captum)")
    store = st.session_state.setdefault("fm_attr", {})
    key = (w["key"], image_key, r["target"])
    ig_col, occ_col = st.columns(2)
    steps_ig = ig_col.slider("Integrated Gradients steps", 8, 64, 16, 8, key="fm_ig_steps")
    if ig_col.button("Run Integrated Gradients", key="fm_ig_run"):
        bar = ig_col.progress(0.0, text="Integrated Gradients…")
        store[("ig",) + key] = attribution.integrated_gradients(
            w["model"], x, r["target"], steps=steps_ig, chunk=4,
            on_progress=lambda d, n: bar.progress(d / n, text=f"{d}/{n} steps along the path"))
    if ("ig",) + key in store:
        ig = store[("ig",) + key]
        ig_col.plotly_chart(plots.plot_overlay(steps["cropped"], ig["heat"], "Integrated Gradients", signed=True),
                            key="fm_ig_fig")
        ig_col.caption(f"Attributions sum to {ig['score'] - ig['baseline_score'] + ig['delta']:.3f}; the score rose "
                       f"by {ig['score'] - ig['baseline_score']:.3f} from a baseline image of all-mean (grey) pixels.")
    if occ_col.button("Run Occlusion", key="fm_occ_run"):
        with occ_col.spinner("Hiding one square at a time (49 forward passes)…"):
            store[("occ",) + key] = attribution.occlusion(w["model"], x, r["target"])
    if ("occ",) + key in store:
        occ_col.plotly_chart(plots.plot_overlay(steps["cropped"], store[("occ",) + key], "Occlusion: score drop",
                                                signed=True), key="fm_occ_fig")
