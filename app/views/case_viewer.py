"""Case Viewer: open a sample or uploaded case, browse three planes with window/level and masks, read its summary."""

import streamlit as st

from app.components.case_picker import case_picker
from app.components.case_summary import case_summary_panel
from app.components.slice_viewer import slice_viewer
from app.errors import shown_errors

st.title("Case Viewer")
case_picker()
case = st.session_state["mewm.case"]
if case is None:
    st.caption("Choose a sample case or upload a CT to view it.")
    st.stop()
with shown_errors("displaying the case"):
    slice_viewer(case, st.session_state["mewm.case_source"])
with shown_errors("showing the case summary"):
    case_summary_panel(case, st.session_state["mewm.case_summary"], st.session_state["mewm.summary_error"])
