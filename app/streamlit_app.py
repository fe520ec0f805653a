"""MeWM Workbench app entrypoint: routes only. Run with ``streamlit run app/streamlit_app.py``."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from app.frame import sidebar_frame
from app.state import init_state

HERE = Path(__file__).resolve().parent
# Page scripts live in views/, not pages/: Streamlit would run a pages/ script on its own when its URL is opened
# directly, bypassing this entrypoint (no shared frame, no research-only notice, no session defaults).

PAGES = [
    st.Page(HERE / "views" / "home.py", title="Home", icon=":material/home:", default=True),
    st.Page(HERE / "views" / "case_viewer.py", title="Case Viewer", icon=":material/radiology:"),
    st.Page(HERE / "views" / "simulate.py", title="Simulate", icon=":material/science:"),
    st.Page(HERE / "views" / "treatment_planning.py", title="Treatment Planning", icon=":material/route:"),
    st.Page(HERE / "views" / "batch_scoring.py", title="Batch Scoring", icon=":material/batch_prediction:"),
    st.Page(HERE / "views" / "turing_read.py", title="Turing Test", icon=":material/visibility:"),
    st.Page(HERE / "views" / "turing_admin.py", title="Turing Admin", icon=":material/admin_panel_settings:"),
    st.Page(HERE / "views" / "turing_results.py", title="Turing Results", icon=":material/query_stats:"),
    st.Page(HERE / "views" / "reasoning_chat.py", title="Reasoning Chat", icon=":material/psychology:"),
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
