"""resviz: the frame. Navigation over the one list of lessons; the model picker and the projector switch in the
sidebar are shared by every page."""
from pathlib import Path

import streamlit as st

from resviz import ui_classroom, ui
from resviz.lessons import LESSONS

ui.guard_server()  # once per server process: every browser message's widget values and uploads checked at the door
ICON = Path(__file__).parent / "assets" / "icon.svg"  # served inline: no icon font from the internet

st.set_page_config(page_title="resviz: how residual networks work", page_icon=str(ICON), layout="wide")

PAGES = [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)] + [
    st.Page(lesson.page, title=lesson.title, icon=lesson.icon) for lesson in LESSONS]

page = st.navigation(PAGES)
ui.run_started()  # before anything is drawn: an earlier run's timed progress fragments draw nothing
ui_classroom.lead_or_follow(page)  # the teacher publishes, a follower shows the class's view: before any widget
# Streamlit leaves about 6rem above every title; on a projector's first screen that room belongs to the lesson.
st.html("<style>[data-testid='stMainBlockContainer'] {padding-top: 2rem;}</style>")
ui.model_sidebar_ui()
if st.sidebar.toggle("Projector", key="projector", bind="query-params",
                     help="Larger text everywhere (body, captions, tables, labels) and in the charts, thicker lines: "
                          "readable from the back of a classroom. It is in the link, so a reload keeps it."):
    st.html(f"<style>html {{font-size: {ui.PROJECTOR_TEXT_PX}px;}}</style>")  # Streamlit sizes its text in rem
ui_classroom.class_ui(page)  # share this view, Previous / Next, the teacher's panel, following, the class's vote
ui.warm_up(p.url_path for p in PAGES)  # once per server, in the background: the class finds every page ready
ui.run_page(page)  # ended early by ui.stop_page once its first screen is drawn: the frame's last line still runs
ui_classroom.run_ended(page)  # a follower has shown the teacher's view; a leading teacher's settings are the class's
