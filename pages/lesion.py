"""Lesion study: delete one block at a time from a trained ResNet and its plain twin (Veit et al. 2016)."""
import streamlit as st

from resviz import lesion, pair, ui
from resviz.plots.beyond import plot_lesion

st.title("Lesion study: delete one block, does the network survive?")
st.markdown(
    "Take a trained ResNet and its trained plain twin and **delete one block at a time, at test time**, "
    "then measure test accuracy. In a ResNet, deleting a block removes its residual branch $F$, so the block "
    "outputs only its shortcut: `relu(shortcut(x))`; at a downsampling block the shortcut is the zero-padded "
    "subsample (option A) or the 1×1 projection (B/C). In the plain net a block whose input and output shapes "
    "match becomes the identity; a block that changes the shape cannot be deleted (marked ✕). "
    "Veit, Wilber & Belongie (2016), *Residual Networks Behave Like Ensembles of Relatively Shallow Networks*, "
    "NeurIPS, section 4, found that a ResNet degrades gracefully (except at downsampling blocks) while a "
    "plain net collapses: the ResNet behaves like an ensemble of many paths, not one deep chain."
)
found = ui.beyond_pair_ui("le")
if found:
    n = st.select_slider("Test images", (100, 250, 500, 1000), value=250, key="le_n",
                         help="Fresh built-in images the pair never saw in training.")
    with ui.friendly_errors("Running the lesion study"):
        pair.check_pair_config(found["cfg"])
        x, y = pair.eval_data(found["cfg"], n)
        res = ui.beyond_result(("lesion", found["key"], "res", n),
                               lambda cb: lesion.lesion_study(found["resnet"], x, y, cb), "Deleting ResNet blocks…")
        plain = ui.beyond_result(("lesion", found["key"], "plain", n),
                                 lambda cb: lesion.lesion_study(found["plain"], x, y, cb),
                                 "Deleting plain-net blocks…")
        st.plotly_chart(plot_lesion(res, plain, chance=1 / found["cfg"].num_classes), key="le_chart")
        drop_res = res["intact"] - res["accuracy"][res["possible"]]
        drop_plain = plain["intact"] - plain["accuracy"][plain["possible"]]
        c1, c2 = st.columns(2)
        c1.metric("ResNet: mean accuracy lost by one deletion", f"{drop_res.mean():.1%}",
                  help=f"Intact accuracy {res['intact']:.1%}, on {n} images.")
        c2.metric("plain twin: mean accuracy lost by one deletion", f"{drop_plain.mean():.1%}",
                  help=f"Intact accuracy {plain['intact']:.1%}; {int((~plain['possible']).sum())} block(s) "
                       "could not be deleted.")
        st.dataframe({"block": res["names"], "downsampling": res["downsampling"],
                      "ResNet accuracy": res["accuracy"], "plain accuracy": plain["accuracy"]},
                     key="le_table", hide_index=True)
        st.caption("Empty plain cells: that block changes the shape, so deleting it is impossible. "
                   "A pair trained for only a few hundred steps is far from the paper's 164 epochs: "
                   "what you see is what this pair does.")
