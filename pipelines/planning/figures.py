"""Pictures of a planning result, shared by the report file and the app: slices of the pre-treatment crop beside the
simulated post-treatment crop of a plan (same slice, same window), and predicted survival curves on one plot."""

from __future__ import annotations

import io

import numpy as np

from pipelines.viewer import WINDOW_PRESETS, render_slice
from pipelines.volume import LABELS, Volume

__all__ = ["tumour_slice", "crop_slice_rgb", "survival_figure", "png_bytes"]


def tumour_slice(labels: np.ndarray) -> int:
    """Axial index (last axis of the RAS crop) with the most tumour voxels (labels 2–4); the middle if none."""
    tumour = np.isin(labels, [LABELS["tumour"], LABELS["necrosis"], LABELS["lipiodol"]])
    per_slice = tumour.reshape(-1, tumour.shape[-1]).sum(0)
    return int(per_slice.argmax()) if per_slice.any() else labels.shape[-1] // 2


def crop_slice_rgb(hu: np.ndarray, labels: np.ndarray | None, affine: np.ndarray, index: int,
                   window: str = "Liver", overlay: bool = True) -> np.ndarray:
    """An axial slice of a crop as an ``(H, W, 3)`` uint8 image (liver window, label outlines when ``overlay``)."""
    preset = WINDOW_PRESETS[window]
    width, level = preset.width, preset.level
    ct = Volume(np.asarray(hu, np.float32), affine, "scalar", "crop")
    lab = Volume(np.asarray(labels, np.uint8), affine, "label", "labels") if labels is not None and overlay else None
    return render_slice(ct, lab, "axial", index, width, level, opacity=0.35, min_display_px=256).image


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG encoding of an RGB uint8 image (matplotlib's writer; no metadata beyond the format's own)."""
    import matplotlib.image as mpimg

    buf = io.BytesIO()
    mpimg.imsave(buf, rgb, format="png")
    return buf.getvalue()


def survival_figure(result, top: int = 5):
    """A matplotlib figure: the mean predicted survival curve of the ``top`` best plans (a research estimate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=110)
    for rank, score in enumerate(result.ranked[:top], start=1):
        ax.step(score.survival_times, score.survival_mean, where="post",
                label=f"{rank}. {score.plan.canonical()} (log-risk {score.risk_mean:+.2f} ± {score.risk_sd:.2f})")
    ax.set_xlabel("months after TACE")
    ax.set_ylabel("predicted survival probability")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(f"Case {result.case_id}: predicted survival per plan (model trained on synthetic data)", fontsize=9)
    fig.tight_layout()
    return fig
