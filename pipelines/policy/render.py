"""The images a vision-language policy sees: axial, coronal and sagittal PNGs through the largest tumour.

The reference policy sent one 8-bit sagittal slice of a 96³ patch, with no window and no mark on the tumour. Here
each view is a whole slice of the study in radiological display orientation (`pipelines.viewer`), in a liver
window (W350/L40), with square millimetre pixels, the tumour outlined in yellow, orientation letters on the four
edges and the plane's name, so a model (or a person auditing what the model saw) can read it like a PACS screen.
"""

from __future__ import annotations

import io

import numpy as np
from scipy import ndimage

from pipelines.case import Case
from pipelines.viewer import PLANES, default_slice, extract_slice, render_slice

__all__ = ["render_views", "render_view", "LIVER_WINDOW", "OUTLINE_RGB", "EDGE_LETTERS"]

LIVER_WINDOW = (350.0, 40.0)  # (width, level) HU: liver and soft tissue
OUTLINE_RGB = (255, 220, 0)  # yellow: visible on grey, distinct from the viewer's red tumour fill
# (left, right, top, bottom) letters of each plane in the viewer's display convention.
EDGE_LETTERS = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}


def _outline(mask: np.ndarray, thickness: int) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, iterations=thickness)


def render_view(case: Case, plane: str, size: int = 384) -> np.ndarray:
    """One annotated view as ``(H, W, 3)`` uint8: the slice of ``plane`` through the largest tumour's centre
    (the middle slice when the case has no tumour mask), longer side ``size`` pixels."""
    index = default_slice(case, plane)
    width, level = LIVER_WINDOW
    view = render_slice(case.ct, None, plane, index, width, level, show=(), min_display_px=size)
    rgb = view.image.copy()
    if case.has_tumour_mask:
        tumour = extract_slice(case.labels.with_array(case.tumour_mask().astype(np.uint8)), plane, index)
        zoom = (rgb.shape[0] / tumour.shape[0], rgb.shape[1] / tumour.shape[1])
        mask = ndimage.zoom(tumour, zoom, order=0, mode="nearest", grid_mode=True) > 0
        mask = mask[: rgb.shape[0], : rgb.shape[1]]
        rgb[: mask.shape[0], : mask.shape[1]][_outline(mask, max(1, max(rgb.shape[:2]) // 192))] = OUTLINE_RGB
    return _annotate(rgb, plane, index)


def _annotate(rgb: np.ndarray, plane: str, index: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    h, w = rgb.shape[:2]
    font = ImageFont.load_default(size=max(10, min(h, w) // 20))
    left, right, top, bottom = EDGE_LETTERS[plane]
    pad = 4
    style = dict(fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    draw.text((pad, h / 2), left, anchor="lm", **style)
    draw.text((w - pad, h / 2), right, anchor="rm", **style)
    draw.text((w / 2, pad), top, anchor="mt", **style)
    draw.text((w / 2, h - pad), bottom, anchor="mb", **style)
    draw.text((pad, pad), f"{plane} {index}", anchor="lt", **style)
    return np.asarray(img)


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def render_views(case: Case, size: int = 384) -> list[bytes]:
    """PNG bytes of the axial, coronal and sagittal views (in that order) through the largest tumour's centre."""
    return [_png(render_view(case, plane, size)) for plane in PLANES]
