"""Choose the open case: a sample case, or an upload (CT + optional label map, or a DICOM .zip)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import resources
from app.errors import describe
from app.state import clear_case, set_case
from models.errors import MultipleSeriesError

__all__ = ["case_picker"]

IMAGE_TYPES = ["nii", "nii.gz", "nrrd", "mha", "zip"]
LABEL_TYPES = ["nii", "nii.gz", "nrrd", "mha"]


def _open(load, label: str, source: str, action: str) -> None:
    """Load a case with ``load()`` and make it the open case; a failure becomes the shown error."""
    try:
        case = load()
    except MultipleSeriesError as e:
        clear_case(str(e), source)
        st.session_state["mewm.series_choices"] = e.series
        return
    except Exception as e:  # noqa: BLE001 - UI boundary; describe() logs unexpected errors
        clear_case(describe(e, action), source)
        return
    try:
        summary, summary_error = resources.summarise(case), None
    except Exception as e:  # noqa: BLE001 - the case still opens; only its summary is missing
        summary, summary_error = None, describe(e, "summarising the case")
    set_case(case, label, source, summary, summary_error)


def _pick_sample() -> None:
    root = resources.sample_data_dir()
    samples = resources.sample_cases(root)
    if not samples:
        st.info(f"No sample cases were found in {root}. Upload a case instead.")
        return
    titles = {s.case_id: s.title for s in samples}
    case_id = st.selectbox("Sample case", list(titles), format_func=titles.__getitem__, index=None,
                           placeholder="Choose a sample case", key="viewer.sample")
    source = f"sample:{root}:{case_id}"
    if case_id is not None and st.session_state["mewm.case_source"] != source:
        _open(lambda: resources.sample_case(case_id, root), f"Sample: {titles[case_id]}", source,
              "opening the sample case")


def _pick_upload() -> None:
    image = st.file_uploader("CT image (.nii, .nii.gz, .nrrd, .mha) or a DICOM series as .zip", type=IMAGE_TYPES,
                             key="viewer.upload_image")
    labels = st.file_uploader("Label map (optional; on the CT's grid: 1 liver, 2 tumour, 3 necrosis, 4 Lipiodol)",
                              type=LABEL_TYPES, key="viewer.upload_labels")
    if image is None:
        return
    series = st.session_state.get(f"viewer.series.{image.file_id}")
    source = f"upload:{image.file_id}:{labels.file_id if labels else ''}:{series or ''}"
    if st.session_state["mewm.case_source"] != source:
        label_file = (labels.name, labels.getvalue()) if labels else None
        _open(lambda: resources.uploaded_case((image.name, image.getvalue()), label_file, series),
              f"Upload: {image.name}", source, "opening the upload")
    choices = st.session_state["mewm.series_choices"]
    if choices:
        st.dataframe(pd.DataFrame(choices), hide_index=True)
        names = {s["uid"]: f"{s.get('description') or 'no description'} ({s.get('modality')}, "
                 f"{s.get('n_slices')} slices)" for s in choices}
        st.selectbox("Series to open", list(names), format_func=names.__getitem__, index=None,
                     placeholder="Choose a series", key=f"viewer.series.{image.file_id}")


def case_picker() -> None:
    """Widgets that open a case into ``st.session_state["mewm.case"]``, with the loading error if any."""
    source = st.radio("Open", ["Sample case", "Upload"], horizontal=True, key="viewer.source")
    if source == "Sample case":
        _pick_sample()
    else:
        _pick_upload()
    if st.session_state["mewm.case_error"]:
        st.error(st.session_state["mewm.case_error"])
