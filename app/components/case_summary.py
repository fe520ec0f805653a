"""The case summary: tumour count and sizes, liver volume, covariates, administered plan and note."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pipelines.case import Case

__all__ = ["NO_TUMOUR_MASK", "case_summary_panel"]

NO_TUMOUR_MASK = "No tumour mask: tumour measurements and planning need one."


def _fmt(value, unit: str = "", digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}{unit}"


def case_summary_panel(case: Case, summary: dict | None, summary_error: str | None) -> None:
    """Metrics and tables of ``summary`` (`pipelines.caseio.case_summary(case).to_dict()`)."""
    st.subheader("Case summary")
    if not case.has_tumour_mask:
        st.info(NO_TUMOUR_MASK)
    if summary_error:
        st.error(summary_error)
    if summary:
        lesions = summary.get("lesions") or []
        diameters = [les.get("max_axial_diameter_mm") for les in lesions if les.get("max_axial_diameter_mm")]
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Tumours", summary.get("n_tumours", len(lesions)) if case.has_tumour_mask else "—")
        m2.metric("Largest diameter", _fmt(max(diameters) if diameters else None, " mm"))
        m3.metric("Tumour volume", _fmt(summary.get("tumour_volume_ml") if case.has_tumour_mask else None, " mL"))
        m4.metric("Liver volume", _fmt(summary.get("liver_volume_ml"), " mL", 0))
        if lesions:
            st.dataframe(pd.DataFrame(lesions), hide_index=True)
        for note in summary.get("notes") or []:
            st.caption(note)
        with st.expander("All measurements"):
            st.json({k: v for k, v in summary.items() if k != "lesions"})
    covariates = case.covariates.to_dict()
    if covariates:
        st.markdown("**Covariates**")
        st.dataframe(pd.DataFrame([covariates]), hide_index=True)
    if case.plan is not None:
        st.markdown(f"**Administered plan:** {case.plan}")
    if case.note:
        st.markdown("**Procedure note**")
        st.text(case.note)
