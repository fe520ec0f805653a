"""MeWM Workbench app entrypoint: routes only. Run with ``streamlit run app/streamlit_app.py``."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from app.frame import sidebar_frame
from app.state import init_state

HERE = Path(__file__).resolve().parent

PAGES = [
    st.Page(HERE / "pages" / "home.py", title="Home", icon=":material/home:", default=True),
    st.Page(HERE / "pages" / "case_viewer.py", title="Case Viewer", icon=":material/radiology:"),
    st.Page(HERE / "pages" / "simulate.py", title="Simulate", icon=":material/science:"),
    st.Page(HERE / "pages" / "treatment_planning.py", title="Treatment Planning", icon=":material/route:"),
    st.Page(HERE / "pages" / "batch_scoring.py", title="Batch Scoring", icon=":material/batch_prediction:"),
    st.Page(HERE / "pages" / "turing_read.py", title="Turing Test", icon=":material/visibility:"),
    st.Page(HERE / "pages" / "turing_admin.py", title="Turing Admin", icon=":material/admin_panel_settings:"),
    st.Page(HERE / "pages" / "turing_results.py", title="Turing Results", icon=":material/query_stats:"),
    st.Page(HERE / "pages" / "reasoning_chat.py", title="Reasoning Chat", icon=":material/psychology:"),
]


def run() -> None:
    """Declare the pages, draw the shared frame, and run the selected page."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    st.set_page_config(page_title="MeWM Workbench", page_icon=":material/radiology:", layout="wide")
    init_state()
    show_open_case = sidebar_frame()
    page = st.navigation(PAGES)
    try:
        page.run()
    finally:  # also after st.stop() on a page
        show_open_case()


if __name__ == "__main__":
    run()
