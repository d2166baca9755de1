"""resviz: the frame. Pages live in pages/; the model picker in the sidebar is shared by all."""
import streamlit as st

from resviz import ui

st.set_page_config(page_title="resviz: how residual networks work", page_icon=":material/stacks:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/architecture.py", title="Architecture", icon=":material/account_tree:"),
    st.Page("pages/shortcut_lab.py", title="Shortcut lab", icon=":material/alt_route:"),
    st.Page("pages/signal_flow.py", title="Signal flow", icon=":material/monitoring:"),
    st.Page("pages/feature_maps.py", title="Feature maps", icon=":material/image:"),
    st.Page("pages/training.py", title="Training race", icon=":material/sprint:"),
    st.Page("pages/lesion.py", title="Lesion study", icon=":material/content_cut:"),
    st.Page("pages/paths.py", title="Paths", icon=":material/route:"),
    st.Page("pages/shattered.py", title="Shattered gradients", icon=":material/grain:"),
    st.Page("pages/landscape.py", title="Loss landscape", icon=":material/landscape:"),
]

page = st.navigation(PAGES)
ui.model_sidebar_ui()
page.run()
