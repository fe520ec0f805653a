"""Which embedded models are installed: what the app's home page shows, read from disk, never assumed.

An embedded network counts as installed when ``<weights_dir>/<name>/config.json`` exists (the
`from_pretrained(dir)` layout of `models/`). Any other folder with a ``config.json`` there (e.g. a user's
checkpoint) is listed too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EMBEDDED_MODELS", "ModelStatus", "WEIGHTS_DIR", "models_status"]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "models" / "weights"

# name -> (role in the pipeline, how to build the weights when missing)
EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    "dynamics": ("Dynamics: simulates the post-TACE CT for a plan", "mewm train dynamics"),
    "response": ("Response predictor: the expected response the dynamics model draws", "mewm train response"),
    "segmentation": ("Segmentation of the simulated tumour", "mewm train segmentation"),
    "survival": ("Inverse dynamics: survival risk of a simulated outcome", "mewm train survival"),
}


@dataclass(frozen=True)
class ModelStatus:
    """One row of the home page's model table."""

    name: str
    role: str
    installed: bool
    path: str
    how_to_install: str

    @property
    def status(self) -> str:
        return "installed" if self.installed else "not yet installed"


def models_status(weights_dir: str | os.PathLike | None = None) -> list[ModelStatus]:
    """The embedded models (in `EMBEDDED_MODELS` order), then any other checkpoint folder found in ``weights_dir``.

    Args:
        weights_dir: where checkpoints live; default `WEIGHTS_DIR` (``models/weights`` in the package).
    """
    root = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    rows = [
        ModelStatus(name, role, (root / name / "config.json").is_file(), str(root / name), command)
        for name, (role, command) in EMBEDDED_MODELS.items()
    ]
    if root.is_dir():
        extra = sorted(p for p in root.iterdir() if p.name not in EMBEDDED_MODELS and (p / "config.json").is_file())
        rows += [ModelStatus(p.name, "Other checkpoint", True, str(p), "") for p in extra]
    return rows
