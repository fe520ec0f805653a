"""Three orthogonal slices of the open case with window/level, mask overlay and slice sliders."""

from __future__ import annotations

import streamlit as st

from pipelines.case import Case
from pipelines.viewer import PLANES, WINDOW_PRESETS, default_slice, n_slices, render_slice

__all__ = ["slice_viewer"]

MANUAL = "Manual"


def _window() -> tuple[float, float]:
    preset = st.radio("Window", [*WINDOW_PRESETS, MANUAL], horizontal=True, key="viewer.preset",
                      help="; ".join(f"{k}: W{v.width:g} / L{v.level:g} ({v.description})"
                                     for k, v in WINDOW_PRESETS.items()))
    if preset != MANUAL:
        return WINDOW_PRESETS[preset].width, WINDOW_PRESETS[preset].level
    left, right = st.columns(2)
    width = left.slider("Width (HU)", 1, 4000, 400, key="viewer.width")
    level = right.slider("Level (HU)", -1000, 3000, 40, key="viewer.level")
    return float(width), float(level)


def _legend(entries) -> None:
    chips = [f'<span style="color:{e.hex}">{"■" if e.style == "fill" else "□"}</span> {e.name}'
             + ("" if e.present else " <span style='opacity:0.5'>(not on these slices)</span>") for e in entries]
    st.markdown(" &nbsp; ".join(chips), unsafe_allow_html=True)


def slice_viewer(case: Case, case_key: str) -> None:
    """Render ``case``; ``case_key`` identifies it so that each new case opens at its own default slices."""
    width, level = _window()
    has_post = case.post_ct is not None
    c1, c2, c3 = st.columns(3)
    show_post = c1.toggle("Post-treatment CT", key="viewer.post", disabled=not has_post,
                          help=None if has_post else "This case has no post-treatment CT.")
    post = has_post and show_post
    labels = case.post_labels if post else case.labels
    overlay = c2.toggle("Mask overlay", value=labels is not None, key="viewer.overlay", disabled=labels is None,
                        help=None if labels is not None else "This image has no label map.")
    opacity = c3.slider("Overlay opacity", 0.0, 1.0, 0.4, 0.05, key="viewer.opacity", disabled=not overlay)
    ct = case.post_ct if post else case.ct
    legend = {}
    for plane, col in zip(PLANES, st.columns(3)):
        n = n_slices(ct, plane)
        index = 0 if n == 1 else col.slider(f"{plane.capitalize()} slice", 1, n, default_slice(case, plane) + 1,
                                            key=f"viewer.slice.{plane}.{case_key}") - 1
        shown = render_slice(ct, labels if overlay else None, plane, index, width, level, opacity)
        col.image(shown.image, caption=f"{plane} {index + 1}/{n} · {shown.pixel_mm:.2f} mm/pixel",
                  width="stretch")
        for e in shown.legend:
            legend[e.name] = e if e.present or e.name not in legend else legend[e.name]
    if legend:
        _legend(legend.values())
    st.caption("Axial and coronal: patient right on the image's left. Sagittal: anterior on the left. "
               "Superior and anterior at the top.")
