"""resviz: the frame. Pages live in pages/; the model picker in the sidebar is shared by all."""
import streamlit as st

from resviz import ui

st.set_page_config(page_title="resviz: how residual networks work", page_icon=":material/stacks:", layout="wide")

PAGES = [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)] + [
    st.Page(path, title=title, icon=icon) for path, title, icon, _ in ui.LESSONS]

page = st.navigation(PAGES)
ui.model_sidebar_ui()
page.run()
