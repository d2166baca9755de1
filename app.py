"""resviz: the frame. Pages live in pages/; the model picker in the sidebar is shared by all."""
import streamlit as st

from resviz import ui

st.set_page_config(page_title="resviz: how residual networks work", page_icon="🧱", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/architecture.py", title="Architecture", icon="🏗️"),
]

page = st.navigation(PAGES)
ui.model_sidebar_ui()
page.run()
