"""A cohort as survival data: crops, the post-treatment labels a survival model sees, outcomes and covariates.

`load_survival_data(manifest, ...)` reuses the world model's crop cache (`build_crop_cache`: same 2 mm, 48³
tumour-centred crops) and joins each cached case with its manifest row (``time_months``, ``event``, covariates).

Which post-treatment labels (``post_labels``):

- ``"segmented"`` (default): the world model's segmenter applied to the TRUE post-treatment crop, and outside the
  change region (`pipelines.worldmodel.regions.change_region`) the pre-treatment labels, exactly as
  `pipelines.worldmodel.simulate` labels a simulated crop. At planning time the survival model only ever sees
  segmenter labels of (simulated) crops, so training on them keeps its inputs in the distribution it is used on
  (segmenter errors included). Computed once per crop cache and segmenter, cached beside the crops.
- ``"decoded"``: the same, but the true post crop first goes through the world model's autoencoder (encoded,
  decoded and faded into the pre-treatment crop at the edge of the change region) before the segmenter labels it:
  the whole chain a simulated crop goes through (`pipelines.worldmodel.simulate.decode_and_segment`), so the
  autoencoder's blur is in the training inputs too. The autoencoder is the one beside the segmenter
  (``<segmenter_dir>/../autoencoder``).
- ``"true"``: the cohort's own post-treatment labels (the simulator's truth; for users without a segmenter).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ConfigError, ManifestError, MeWMWarning
from pipelines.case import Covariates
from pipelines.manifest import read_manifest
from pipelines.progress import ProgressFn, resolve_progress
from pipelines.worldmodel.crops import CropCache, CropConfig, build_crop_cache
from pipelines.worldmodel.regions import DEFAULT_CHANGE_MARGIN_MM, change_region
from pipelines.worldmodel.report import display_path

__all__ = ["POST_LABEL_SOURCES", "SurvivalDataWarning", "SurvivalData", "load_survival_data", "default_segmenter_dir",
           "load_segmenter", "segment_post_crops", "DecodedLabeller", "post_labeller"]

POST_LABEL_SOURCES = ("segmented", "decoded", "true")
SEGMENT_BATCH = 8


class SurvivalDataWarning(MeWMWarning):
    """A cached case has no outcome (time or event) in the manifest and is left out of survival data."""


@dataclass
class SurvivalData:
    """Survival data of a cohort: one entry per usable case, in crop-cache order.

    Attributes:
        cache: the crop cache; ``indices``: the cache positions used (cases with an outcome).
        case_ids, time (months), event (bool), covariates, plans (administered `Plan` or None): per case.
        post_labels: ``(N, X, Y, Z)`` uint8 post-treatment labels from ``post_source``.
        post_source: one of `POST_LABEL_SOURCES`; ``segmenter``: weights folder and sha256 (and the autoencoder's,
            when decoded) unless ``"true"``.
        skipped: cases left out (``case_id``, ``reason``).
    """

    cache: CropCache
    indices: list[int]
    case_ids: list[str]
    time: np.ndarray
    event: np.ndarray
    covariates: list[Covariates]
    post_labels: np.ndarray
    post_source: str
    segmenter: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    plans: list[Any] = field(default_factory=list)  # the administered `models.plan.Plan` per case (None if unknown)

    def __len__(self) -> int:
        return len(self.case_ids)

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.cache.config.spacing)) / 1000.0

    def crops(self, i: int) -> dict[str, Any]:
        """Case ``i``: ``pre``/``post`` float32 windowed crops in [-1, 1], ``pre_labels`` and the chosen
        ``post_labels`` (uint8)."""
        d = self.cache.load(self.indices[i])
        d["post_labels"] = self.post_labels[i]
        return d

    def summary(self) -> dict[str, Any]:
        return {"manifest": display_path(self.cache.manifest), "synthetic": self.cache.synthetic, "n_cases": len(self),
                "n_events": int(self.event.sum()), "n_skipped": len(self.skipped) + len(self.cache.skipped),
                "post_labels": self.post_source, "segmenter": self.segmenter, "crop": self.cache.config.to_dict(),
                "cache_key": self.cache.key}


def default_segmenter_dir() -> Path:
    """The configured world model's segmentation weights folder (``[worldmodel] weights_dir``/segmentation)."""
    from pipelines.config import load_config

    return Path(load_config().worldmodel.weights_dir).expanduser() / "segmentation"


def segment_post_crops(segmenter: Any, post: np.ndarray, pre_labels: np.ndarray,
                       spacing: tuple[float, float, float]) -> np.ndarray:
    """``(B, X, Y, Z)`` uint8 labels of windowed post crops ``(B, X, Y, Z)``: the segmenter's inside the change
    region of each pre-treatment label crop, the pre-treatment labels outside it (as `simulate` labels its crops)."""
    import torch

    with torch.no_grad():
        predicted = segmenter.predict(torch.from_numpy(np.asarray(post, np.float32))[:, None]).numpy()
    out = [np.where(change_region(pre, DEFAULT_CHANGE_MARGIN_MM, spacing), p, pre).astype(np.uint8)
           for p, pre in zip(predicted, pre_labels)]
    return np.stack(out)


def load_segmenter(segmenter_dir: Path, crop: CropConfig) -> tuple[Any, dict[str, Any]]:
    """The segmentation network in ``segmenter_dir`` (checked to match ``crop``) and its record (dir, sha256)."""
    from pipelines.worldmodel.evaluate import _load_segmenter

    model, seg_crop, _ = _load_segmenter(segmenter_dir.parent)
    if seg_crop != crop:
        raise ConfigError(f"The segmenter in {segmenter_dir} was trained on {seg_crop.to_dict()} crops, but the "
                          f"survival crops are {crop.to_dict()}; use the same crop or --post-labels true.")
    sha = hashlib.sha256((segmenter_dir / "model.pt").read_bytes()).hexdigest()
    return model, {"dir": display_path(segmenter_dir), "weights_sha256": sha,
                   "change_margin_mm": DEFAULT_CHANGE_MARGIN_MM}


class DecodedLabeller:
    """Labels true post crops through the chain of a simulated crop: the world model's autoencoder (encode,
    decode, fade into the pre-treatment crop at the change region's edge), then its segmenter
    (`pipelines.worldmodel.simulate.decode_and_segment`), with the world model's own change margin.

    Args:
        segmenter_dir: the world model's ``segmentation/`` folder; its parent holds the ``autoencoder/`` (and the
            ``dynamics/`` that `load_world_model` checks them against).
        crop: the survival crops' geometry, which must be the world model's.

    Raises:
        CheckpointNotFoundError: the world model is incomplete. ConfigError: its crop differs from ``crop``.
    """

    def __init__(self, segmenter_dir: Path, crop: CropConfig) -> None:
        from pipelines.worldmodel.weights import load_world_model

        self.world = load_world_model(segmenter_dir.parent)
        if self.world.crop != crop:
            raise ConfigError(f"The world model in {segmenter_dir.parent} works on {self.world.crop.to_dict()} "
                              f"crops, but the survival crops are {crop.to_dict()}; use the same crop or "
                              "--post-labels true.")
        self.info = {"dir": display_path(segmenter_dir), "change_margin_mm": float(self.world.change_margin_mm),
                     "weights_sha256": hashlib.sha256((segmenter_dir / "model.pt").read_bytes()).hexdigest(),
                     "autoencoder_sha256": hashlib.sha256(
                         (segmenter_dir.parent / "autoencoder" / "model.pt").read_bytes()).hexdigest()}

    def __call__(self, pre: np.ndarray, post: np.ndarray, pre_labels: np.ndarray) -> np.ndarray:
        """``(B, X, Y, Z)`` uint8 labels of windowed ``post`` crops given their windowed ``pre`` crops and labels."""
        import torch

        from pipelines.worldmodel.simulate import decode_and_segment

        out = []
        with torch.no_grad():
            for pre_i, post_i, labels_i in zip(pre, post, pre_labels):
                image = torch.from_numpy(np.asarray(post_i, np.float32))[None, None]
                with self.world.autocast():
                    latent = self.world.autoencoder.encode(image)
                region = change_region(labels_i, self.world.change_margin_mm, self.world.crop.spacing)
                _, labels = decode_and_segment(self.world, latent.float(),
                                               torch.from_numpy(np.asarray(pre_i, np.float32))[None, None],
                                               labels_i, region)
                out.append(labels[0].numpy().astype(np.uint8))
        return np.stack(out)


PostLabeller = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def post_labeller(source: str, segmenter_dir: Path, crop: CropConfig) -> tuple[PostLabeller, dict[str, Any]]:
    """``labeller(pre, post, pre_labels)`` → ``(B, X, Y, Z)`` uint8 labels of windowed post crops for ``source``
    ``"segmented"`` (`segment_post_crops`) or ``"decoded"`` (`DecodedLabeller`), and its record (dir, sha256(s),
    change margin)."""
    if source == "decoded":
        labeller = DecodedLabeller(segmenter_dir, crop)
        return labeller, labeller.info
    model, info = load_segmenter(segmenter_dir, crop)
    return (lambda pre, post, pre_labels: segment_post_crops(model, post, pre_labels, crop.spacing)), info


def _segmented_post_labels(cache: CropCache, indices: list[int], segmenter_dir: Path,
                           progress: bool | ProgressFn | None,
                           source: str = "segmented") -> tuple[np.ndarray, dict[str, Any]]:
    """Segmenter labels of the true post crops (``source`` ``"decoded"``: through the autoencoder first) inside
    the change region, pre labels outside (as `simulate`)."""
    labeller, info = post_labeller(source, segmenter_dir, cache.config)
    key_text = f"{info['weights_sha256']}:{info['change_margin_mm']}"
    if source == "decoded":
        key_text = f"decoded:{info['autoencoder_sha256']}:{key_text}"
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    store = cache.directory / f"survival-post-labels-{key}.npz"
    if store.is_file():
        with np.load(store) as z:
            if list(z["case_ids"]) == cache.case_ids:
                return z["labels"][indices], info
    report = resolve_progress(progress, "decode and segment post crops" if source == "decoded"
                              else "segment post crops", "case")
    out = []
    for s in range(0, len(cache), SEGMENT_BATCH):
        items = [cache.load(i) for i in range(s, min(s + SEGMENT_BATCH, len(cache)))]
        out.extend(labeller(*(np.stack([d[k] for d in items]) for k in ("pre", "post", "pre_labels"))))
        if report:
            report(s + len(items), len(cache), "")
    labels = np.stack(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{store.stem}.", suffix=".npz", dir=store.parent)
    os.close(fd)
    np.savez_compressed(tmp, labels=labels, case_ids=np.array(cache.case_ids))
    os.replace(tmp, store)
    return labels[indices], info


def load_survival_data(manifest: str | os.PathLike, *, crop: CropConfig | None = None, post_labels: str = "segmented",
                       segmenter_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                       progress: bool | ProgressFn | None = True, min_cases: int = 3) -> SurvivalData:
    """Crops, post labels, outcomes and covariates of every usable case of ``manifest`` (see the module doc).

    Args:
        crop: crop geometry (default 2 mm, 48³: the world model's).
        post_labels: one of `POST_LABEL_SOURCES`. segmenter_dir: the segmentation weights (default the
            configured world model's ``segmentation/``; with ``"decoded"``, the autoencoder beside it too).

    Raises:
        ManifestError: fewer than ``min_cases`` cases with a crop and an outcome, or no observed death.
        ConfigError: an unknown ``post_labels``, or a segmenter trained on another crop.
        CheckpointNotFoundError: no segmenter (with ``"segmented"``).
    """
    if post_labels not in POST_LABEL_SOURCES:
        raise ConfigError(f"post_labels must be one of {POST_LABEL_SOURCES}, got {post_labels!r}.")
    crop = crop or CropConfig()
    cache = build_crop_cache(manifest, cache_dir, spacing=crop.spacing, crop_size=crop.crop_size, progress=progress)
    records = {r.case_id: r for r in read_manifest(cache.manifest)}
    indices, skipped = [], []
    for i, case_id in enumerate(cache.case_ids):
        r = records.get(case_id)
        if r is None or r.time_months is None or r.event is None:
            skipped.append({"case_id": case_id, "reason": "no time_months or event in the manifest"})
            warnings.warn(f"Survival data: case {case_id!r} left out: no outcome.", SurvivalDataWarning, stacklevel=2)
        else:
            indices.append(i)
    ids = [cache.case_ids[i] for i in indices]
    time = np.array([records[c].time_months for c in ids], dtype=np.float64)
    event = np.array([bool(records[c].event) for c in ids], dtype=bool)
    if len(ids) < min_cases or not event.any():
        raise ManifestError(f"{cache.manifest} has {len(ids)} case(s) with a tumour crop and an outcome and "
                            f"{int(event.sum())} observed death(s); a survival model needs at least {min_cases} "
                            "cases and one death. Use a cohort with time_months and event columns (e.g. "
                            "`mewm cohort generate --n 200 --out DIR`).")
    if post_labels == "true":
        post, seg = np.stack([cache.load(i)["post_labels"] for i in indices]), {}
    else:
        seg_dir = Path(segmenter_dir).expanduser() if segmenter_dir is not None else default_segmenter_dir()
        post, seg = _segmented_post_labels(cache, indices, seg_dir, progress, source=post_labels)
    from models.plan import Plan

    plans = [Plan.parse(cache.entries[i]["plan"]) if cache.entries[i].get("plan") else None for i in indices]
    return SurvivalData(cache=cache, indices=indices, case_ids=ids, time=time, event=event,
                        covariates=[Covariates.from_dict(records[c].covariates) for c in ids], post_labels=post,
                        post_source=post_labels, segmenter=seg, skipped=skipped, plans=plans)
