"""The shared frame shown on every page: the research-only disclaimer and the open case."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

__all__ = ["DISCLAIMER", "sidebar_frame"]

DISCLAIMER = (
    "Research use only — not for clinical use. MeWM Workbench has not been validated for diagnosis or "
    "treatment decisions; its simulations and rankings must not guide patient care."
)


def sidebar_frame() -> Callable[[], None]:
    """Draw the sidebar (disclaimer, a slot for the open case) and return the function that fills the slot.

    Call the returned function after the page has run, so the sidebar names a case opened during this run.
    """
    with st.sidebar:
        st.warning(DISCLAIMER)
        slot = st.empty()

    def show_open_case() -> None:
        label = st.session_state["mewm.case_label"]
        slot.caption(f"Open case: {label}" if label else "No case open.")

    return show_open_case
