"""resviz: the frame. Pages live in pages/; the model picker in the sidebar is shared by all."""
import streamlit as st

from resviz import ui
from resviz.lessons import LESSONS

st.set_page_config(page_title="resviz: how residual networks work", page_icon=":material/stacks:", layout="wide")

PAGES = [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)] + [
    st.Page(lesson.page, title=lesson.title, icon=lesson.icon) for lesson in LESSONS]

page = st.navigation(PAGES)
ui.model_sidebar_ui()
page.run()
