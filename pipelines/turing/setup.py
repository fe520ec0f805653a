"""Study set-up: render every source crop to its PNG(s) ahead of time, under opaque random names.

`render_items` is the one rendering path of a study: every item, real or synthetic, goes through
`pipelines.turing.render.render_crop` with the same `ViewSettings`, and the result must have one size for all items
(checked here: a size that differs by source would be a give-away). Items are shuffled with the study's seed before
they get database ids, so not even the admin's item numbers follow the source order.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from models.errors import StudySetupError
from pipelines.progress import ProgressFn
from pipelines.turing.render import ViewSettings, encode_png, render_crop
from pipelines.turing.sources import SourceCrop

__all__ = ["RenderedItem", "render_items", "new_token"]


def new_token() -> str:
    """An opaque random name (≈ 128 bits, URL-safe): says nothing about an item's truth, source or order."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True, eq=False)
class RenderedItem:
    """One item ready to store: its PNG (and optional context PNG) under random tokens, and its hidden truth."""

    token: str
    png: bytes
    context_token: str | None
    context_png: bytes | None
    truth: str
    source: str
    case_id: str | None


def render_items(crops: list[SourceCrop], view: ViewSettings, context: bool, seed: int,
                 progress: ProgressFn | None = None) -> list[RenderedItem]:
    """Render ``crops`` (in a seeded shuffled order) to PNGs; with ``context``, also each crop's pre-treatment crop.

    Raises:
        StudySetupError: no crops, context asked for crops without one, or rendered sizes that differ.
    """
    if not crops:
        raise StudySetupError("A study needs at least one item.")
    if context and any(c.context_hu is None for c in crops):
        raise StudySetupError("Context images need a pre-treatment crop for every item; the folder source has none. "
                              "Turn the context image off, or use a cohort source.")
    order = np.random.default_rng(seed).permutation(len(crops))
    items, shapes = [], set()
    for done, i in enumerate(order, start=1):
        crop = crops[int(i)]
        image = render_crop(crop.hu, crop.spacing, view)
        shapes.add(image.shape)
        context_png = encode_png(render_crop(crop.context_hu, crop.spacing, view)) if context else None
        items.append(RenderedItem(token=new_token(), png=encode_png(image),
                                  context_token=new_token() if context else None, context_png=context_png,
                                  truth=crop.truth, source=crop.source, case_id=crop.case_id))
        if progress is not None:
            progress(done, len(crops), "rendering")
    if len(shapes) != 1:
        raise StudySetupError(f"Rendered items differ in size ({sorted(shapes)}); every item must look the same "
                              "apart from its content. Use crops of one shape and voxel size.")
    return items
