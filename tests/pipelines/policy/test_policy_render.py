"""`render_views`: the three annotated PNG views a vision-language policy sees."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from policy_helpers import make_case

from pipelines.policy.prompt import case_text, proposal_schema
from pipelines.policy.render import OUTLINE_RGB, render_views


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _outline_pixels(img: np.ndarray) -> int:
    return int(np.all(img == np.asarray(OUTLINE_RGB, np.uint8), axis=-1).sum())


def test_three_views_with_the_tumour_outlined():
    views = [_decode(p) for p in render_views(make_case(tumour_radius_mm=15.0), size=256)]
    assert len(views) == 3
    for img in views:
        assert img.dtype == np.uint8 and max(img.shape[:2]) == 256
        assert _outline_pixels(img) > 20  # the slice passes through the tumour centre
        assert len(np.unique(img[..., 0])) > 10  # a real greyscale image, not a blank


def test_no_mask_no_outline():
    views = [_decode(p) for p in render_views(make_case(labels=False), size=128)]
    assert len(views) == 3 and all(_outline_pixels(img) == 0 for img in views)


def test_case_text_and_schema_come_from_the_case_and_the_table():
    from models.action_base import default_action_base

    text = case_text(make_case(covariates={"child_pugh": "B", "bilirubin": 40.0}))
    assert "1 lesion(s)" in text and "Child-Pugh class B" in text and "bilirubin 40 µmol/L" in text
    assert "not available (imaging only)" in case_text(make_case())
    schema = proposal_schema()
    assert schema["additionalProperties"] is False
    names = set(schema["properties"]["preferred_plan"]["properties"]["agents"]["items"]["enum"])
    assert names == set(default_action_base().names)
