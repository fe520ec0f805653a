"""The guard at the top of pages that need an open case with a tumour mask (Simulate, Treatment Planning)."""

from __future__ import annotations

import streamlit as st

__all__ = ["NO_CASE", "require_case_with_tumour"]

NO_CASE = "No case is open. Open a case with a tumour mask in the Case Viewer first."


def require_case_with_tumour(purpose: str):
    """The open `Case`; without one, or without a tumour mask, say so (and how to fix it) and stop the page.

    Args:
        purpose: what the page would do, for the message (``"simulate"``, ``"plan for"``).
    """
    case = st.session_state["mewm.case"]
    if case is None:
        st.info(NO_CASE)
        st.page_link("views/case_viewer.py", label="Open the Case Viewer", icon=":material/radiology:")
        st.stop()
    if not case.has_tumour_mask:
        st.info(f"The open case has no tumour mask, so there is nothing to {purpose}. Open a case with one.")
        st.stop()
    return case
