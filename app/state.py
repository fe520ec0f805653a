"""Session state of the app: every cross-page key, namespaced ``mewm.*``, initialised in one place."""

from __future__ import annotations

from typing import Any

import streamlit as st

__all__ = ["DEFAULTS", "init_state", "set_case", "clear_case"]

# key -> default. Widgets get their own explicit keys ("viewer.*") and are not listed here.
DEFAULTS: dict[str, Any] = {
    "mewm.case": None,  # the open pipelines.case.Case (read-only arrays), or None
    "mewm.case_label": None,  # what the sidebar shows: "Sample: ..." or "Upload: ..."
    "mewm.case_source": None,  # identity of what was loaded (sample id / upload file ids), to avoid reloading
    "mewm.case_summary": None,  # case_summary(case).to_dict(), or None
    "mewm.summary_error": None,  # why the summary could not be computed (plain words), or None
    "mewm.case_error": None,  # the last loading error (plain words), or None
    "mewm.series_choices": None,  # MultipleSeriesError.series, when a DICOM archive holds several series
    "mewm.simulation": None,  # (case source, SimulationResult) of the last Simulate run, or None
    "mewm.proposal": None,  # (case source, policy backend, Proposal) of the last policy proposal, or None
    "mewm.planning": None,  # (case source, PlanningResult) of the last Treatment Planning run, or None
}


def init_state() -> None:
    """Create every ``mewm.*`` key that is missing (existing values are kept across reruns and pages)."""
    for key, value in DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value


def set_case(case, label: str, source: str, summary: dict | None, summary_error: str | None) -> None:
    """Make ``case`` the open case and forget any previous error."""
    st.session_state["mewm.case"] = case
    st.session_state["mewm.case_label"] = label
    st.session_state["mewm.case_source"] = source
    st.session_state["mewm.case_summary"] = summary
    st.session_state["mewm.summary_error"] = summary_error
    st.session_state["mewm.case_error"] = None
    st.session_state["mewm.series_choices"] = None


def clear_case(error: str | None = None, source: str | None = None) -> None:
    """Close the open case, remembering ``error`` (shown to the user) and the ``source`` that failed."""
    for key, value in DEFAULTS.items():
        st.session_state[key] = value
    st.session_state["mewm.case_error"] = error
    st.session_state["mewm.case_source"] = source
