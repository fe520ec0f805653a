"""Shared pieces of the survival tests: a tiny virtual cohort (6 patients, 2 deaths), built once per session, and
synthetic label crops of a treated tumour."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.worldmodel.crops import CropConfig

TINY_CROP = CropConfig((5.0, 5.0, 5.0), (16, 16, 16))
_made: dict[str, Path] = {}


def tiny_cohort(tmp_path_factory) -> Path:
    """``generate_cohort(n=6, seed=3, size=(48, 48, 32))``: 6 patients, 2 observed deaths; once per session."""
    if "cohort" not in _made:
        from pipelines.cohort.generate import generate_cohort

        out = tmp_path_factory.mktemp("survival_cohort") / "c6"
        generate_cohort(n=6, seed=3, out=out, size=(48, 48, 32), progress=False)
        _made["cohort"] = out
    return _made["cohort"]


def ball(shape: tuple[int, int, int], radius: float) -> np.ndarray:
    """A centred ball of ``radius`` voxels."""
    grid = np.indices(shape) - (np.array(shape) - 1)[:, None, None, None] / 2
    return np.sqrt((grid ** 2).sum(0)) <= radius


def treated_pair(viable_radius: float, treated: bool, shape=(24, 24, 24)) -> tuple[np.ndarray, np.ndarray]:
    """(pre, post) labels: liver everywhere, a pre-treatment tumour of radius 6 voxels; afterwards a viable core of
    ``viable_radius`` and, when ``treated``, the rest of the old tumour as necrosis (outer) and Lipiodol (inner)."""
    pre = np.ones(shape, np.uint8)
    pre[ball(shape, 6)] = 2
    post = np.ones(shape, np.uint8)
    if treated:
        post[ball(shape, 6)] = 3
        post[ball(shape, 4.5)] = 4
    post[ball(shape, viable_radius)] = 2
    return pre, post
