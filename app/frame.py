"""The shared frame shown on every page: the research-only disclaimer and the open case."""

from __future__ import annotations

import streamlit as st

__all__ = ["DISCLAIMER", "sidebar_frame"]

DISCLAIMER = (
    "Research use only — not for clinical use. MeWM Workbench has not been validated for diagnosis or "
    "treatment decisions; its simulations and rankings must not guide patient care."
)


def sidebar_frame() -> None:
    """Sidebar: the disclaimer and which case is open (the picker itself is on the Case Viewer page)."""
    with st.sidebar:
        st.warning(DISCLAIMER)
        label = st.session_state["mewm.case_label"]
        st.caption(f"Open case: {label}" if label else "No case open.")
