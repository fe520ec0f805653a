"""Before vs after: the pre-treatment crop beside a simulated post-treatment crop, on the same axial slice and
window, with label overlays. Shared by the Simulate and Treatment Planning pages."""

from __future__ import annotations

import numpy as np
import streamlit as st

from pipelines.viewer import WINDOW_PRESETS, n_slices, render_slice
from pipelines.volume import Volume

__all__ = ["before_after"]


def before_after(pre_hu: np.ndarray, pre_labels: np.ndarray, post_hu: np.ndarray, post_labels: np.ndarray, crop,
                 after_caption: str, key: str) -> None:
    """Window, slice and opacity controls, then the two images side by side.

    Args:
        crop: the `CropSample` of the crops (its affine and centre). key: widget key prefix (``"simulate"``).
    """
    c1, c2, c3 = st.columns(3)
    preset = c1.selectbox("Window", list(WINDOW_PRESETS), key=f"{key}.window")
    width, level = WINDOW_PRESETS[preset].width, WINDOW_PRESETS[preset].level
    affine = crop.crop_affine
    pre = Volume(pre_hu, affine, "scalar", "pre-treatment crop")
    n = n_slices(pre, "axial")
    centre = int(np.clip(crop.centre_crop_voxel[2], 0, n - 1))
    index = c2.slider("Axial slice", 1, n, centre + 1, key=f"{key}.slice") - 1
    opacity = c3.slider("Overlay opacity", 0.0, 1.0, 0.4, 0.05, key=f"{key}.opacity")
    post = Volume(post_hu, affine, "scalar", "simulated crop")
    left, right = st.columns(2)
    for col, ct, labels, caption in ((left, pre, pre_labels, "Before: pre-treatment CT and labels"),
                                     (right, post, post_labels, after_caption)):
        shown = render_slice(ct, Volume(labels, affine, "label"), "axial", index, width, level, opacity)
        col.image(shown.image, caption=f"{caption} · axial {index + 1}/{n}", width="stretch")
