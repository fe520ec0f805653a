"""The crop cache of the world model's training data, and the torch datasets of the three trainers.

`build_crop_cache` reads a cohort manifest (`pipelines.manifest`), loads each case (`load_manifest_case`) and crops it
around its largest lesion with `pipelines.preprocess.preprocess_case` (RAS, ``spacing`` mm, HU window → [-1, 1]).
Each usable case becomes one ``<case_id>.npz``::

    pre, post                (X, Y, Z) float16 in [-1, 1]   pre- and post-treatment CT crops
    pre_labels, post_labels  (X, Y, Z) uint8                `pipelines.volume.LABELS`
    plan                     canonical plan text ("" when the case has no plan)
    case_id

and ``index.json`` records the config, the manifest's fingerprint, the cases and the cases skipped (no tumour, no
post-treatment pair) with the reason; each skip also raises a `CropCacheWarning`. The cache is reused when the
config and the manifest are unchanged, and written into a temporary folder renamed at the end (never half-written).
The default folder is ``<manifest dir>/.cache/crops-<key>``.

Datasets (all in memory; a cohort of 200 cases at 48³ is ~90 MB of float32):

- `AutoencoderCrops`: every pre and post CT crop ``(1, X, Y, Z)``; random flips;
- `SegmentationCrops`: (crop, labels) pairs, pre and post; the same flips on both; optionally the autoencoder's
  reconstructions of the crops in place of some of them (`autoencoder_reconstructions`, cached beside the crops);
- `WholeLesionCrops`: the crops of `build_whole_lesion_cache` (lesions larger than the training crop, each in the
  smallest larger crop that holds it whole, as `simulate` crops them), one crop per draw (sizes differ);
- `LatentPairs`: the autoencoder's latents of the pre and post crops (computed once and cached beside the crops),
  the tumour and change-region masks at latent resolution (`pipelines.worldmodel.regions.latent_masks`), and each
  case's `Plan`;
- `WholeLesionPairs`: the same of a `build_whole_lesion_cache` cache, grouped by crop size (one size per batch).

Each has ``sample_batch(batch_size, generator)`` drawing a batch with replacement from a seeded `torch.Generator`,
and ``all_batches(batch_size)`` for a fixed, ordered pass (validation).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from models.errors import CaseIOError, EmptyMaskError, ManifestError, MeWMWarning
from models.plan import Plan
from pipelines.manifest import FILE_COLUMNS, ManifestRecord, load_manifest_case, read_manifest
from pipelines.progress import ProgressFn, resolve_progress

__all__ = ["CACHE_FORMAT", "CropCacheWarning", "CropConfig", "CropCache", "build_crop_cache", "AutoencoderCrops",
           "SegmentationCrops", "LatentPairs", "LatentBatch", "random_flips", "autoencoder_reconstructions",
           "build_whole_lesion_cache", "WholeLesionCrops", "WholeLesionPairs", "WHOLE_LESION_STEP"]

CACHE_FORMAT = 1
# Whole-lesion crops grow in these steps (voxels a side), the embedded world model's `WorldModel.crop_step` (its
# autoencoder's down-sampling 4 times the dynamics UNet's 4), as `simulate` grows the crop of a large lesion.
WHOLE_LESION_STEP = 16


class CropCacheWarning(MeWMWarning):
    """A manifest case was left out of the crop cache (no tumour, no post-treatment pair)."""


@dataclass(frozen=True)
class CropConfig:
    """How crops are made: voxel size (mm) and shape (voxels) of `preprocess_case`."""

    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)
    crop_size: tuple[int, int, int] = (48, 48, 48)

    def __post_init__(self) -> None:
        spacing = tuple(float(s) for s in self.spacing)
        size = tuple(int(s) for s in self.crop_size)
        if len(spacing) != 3 or len(size) != 3 or min(spacing) <= 0 or min(size) < 1:
            raise ValueError(f"CropConfig needs three positive spacings and sizes, got spacing={self.spacing!r}, "
                             f"crop_size={self.crop_size!r}.")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "crop_size", size)

    def to_dict(self) -> dict[str, list]:
        return {"spacing": list(self.spacing), "crop_size": list(self.crop_size)}


# ------------------------------------------------------------------------------------------------ fingerprints
def _manifest_path(manifest: str | os.PathLike) -> Path:
    path = Path(manifest).expanduser().resolve()
    return path / "manifest.csv" if path.is_dir() else path


def _manifest_fingerprint(path: Path, records: list[ManifestRecord]) -> str:
    """sha256 of manifest.csv, manifest.json (if any) and the name and size of every file the manifest names."""
    h = hashlib.sha256(path.read_bytes())
    meta = path.with_suffix(".json")
    if meta.is_file():
        h.update(meta.read_bytes())
    for r in records:
        for col in FILE_COLUMNS:
            p = getattr(r, col)
            if p:
                h.update(f"{r.case_id}/{col}:{Path(p).stat().st_size};".encode())
    return h.hexdigest()


def _cache_key(config: CropConfig, fingerprint: str) -> str:
    text = json.dumps({"format": CACHE_FORMAT, "config": config.to_dict(), "manifest": fingerprint}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _is_synthetic(path: Path) -> bool:
    meta = path.with_suffix(".json")
    if not meta.is_file():
        return False
    try:
        return bool(json.loads(meta.read_text()).get("synthetic", False))
    except (OSError, json.JSONDecodeError) as e:
        raise ManifestError(f"The manifest's metadata {meta} is not readable JSON ({e}); fix or remove it.") from e


# ------------------------------------------------------------------------------------------------ the cache
@dataclass
class CropCache:
    """A built crop cache (see the module docstring). Open one with `build_crop_cache` or `CropCache.open`.

    Attributes:
        directory: the cache folder.
        manifest: the manifest it was built from.
        config: `CropConfig`.
        entries: one dict per usable case: ``case_id``, ``file`` (npz name), ``plan`` (canonical text or ``None``).
        skipped: one dict per left-out case: ``case_id``, ``reason``.
        synthetic: the manifest's ``manifest.json`` says the cohort is synthetic.
        reused: this call found the cache already built.
    """

    directory: Path
    manifest: Path
    config: CropConfig
    entries: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    synthetic: bool = False
    key: str = ""
    reused: bool = False

    @classmethod
    def open(cls, directory: str | os.PathLike) -> "CropCache":
        """Read ``index.json`` of a built cache. Raises `CaseIOError` when it is missing or unreadable."""
        directory = Path(directory)
        try:
            index = json.loads((directory / "index.json").read_text())
            return cls(directory=directory, manifest=Path(index["manifest"]),
                       config=CropConfig(**index["config"]), entries=list(index["cases"]),
                       skipped=list(index["skipped"]), synthetic=bool(index["synthetic"]), key=index["key"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise CaseIOError(f"{directory} is not a readable crop cache ({e}). Rebuild it with build_crop_cache "
                              "(or delete the folder).") from e

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def case_ids(self) -> list[str]:
        return [e["case_id"] for e in self.entries]

    @property
    def uniform(self) -> bool:
        """All crops have ``config.crop_size`` (a whole-lesion cache's crops differ in size)."""
        return all("crop_size" not in e for e in self.entries)

    def load(self, i: int) -> dict[str, Any]:
        """Case ``i``: ``pre``/``post`` float32 ``(X, Y, Z)`` in [-1, 1], ``pre_labels``/``post_labels`` uint8,
        ``plan`` (canonical text or ``None``), ``case_id``."""
        entry = self.entries[i]
        with np.load(self.directory / entry["file"]) as z:
            return {"pre": z["pre"].astype(np.float32), "post": z["post"].astype(np.float32),
                    "pre_labels": z["pre_labels"], "post_labels": z["post_labels"],
                    "plan": str(z["plan"]) or None, "case_id": str(z["case_id"])}


def _reused(directory: Path) -> CropCache:
    cache = CropCache.open(directory)
    cache.reused = True
    return cache


def _swap_in(tmp: Path, directory: Path, index: dict[str, Any]) -> CropCache:
    """Write ``index`` into the cache built in ``tmp`` and move it to ``directory``, replacing a stale cache there;
    if a concurrent build of the same key finished first, keep that one (``tmp`` is left for the caller to remove)."""
    (tmp / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    if (directory / "index.json").is_file() and CropCache.open(directory).key == index["key"]:
        return _reused(directory)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return CropCache.open(directory)


def _crop_case(record: ManifestRecord, config: CropConfig) -> dict[str, np.ndarray] | str:
    """The npz arrays of one case, or the reason it cannot be used."""
    from pipelines.preprocess import preprocess_case

    if not (record.labels and record.post_ct and record.post_labels):
        missing = [c for c in ("labels", "post_ct", "post_labels") if not getattr(record, c)]
        return f"no {', '.join(missing)} in the manifest"
    case = load_manifest_case(record)
    try:
        sample = preprocess_case(case, spacing=config.spacing, crop_size=config.crop_size)
    except EmptyMaskError as e:
        return f"empty tumour mask ({e})"
    return _crop_arrays(case, sample, record.case_id)


def _crop_arrays(case, sample, case_id: str) -> dict[str, np.ndarray]:
    """The npz arrays of a `preprocess_case` sample of ``case``."""
    plan = case.plan.canonical() if case.plan is not None else ""

    def arr(t, dtype):
        return t[0].detach().cpu().numpy().astype(dtype)

    return {"pre": arr(sample.image, np.float16), "pre_labels": arr(sample.labels, np.uint8),
            "post": arr(sample.post_image, np.float16), "post_labels": arr(sample.post_labels, np.uint8),
            "plan": np.array(plan), "case_id": np.array(case_id)}


def _init_crop_worker() -> None:
    """One torch and one SimpleITK thread per crop worker: the workers share the machine's cores between them."""
    import SimpleITK as sitk

    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _crops(records: list[ManifestRecord], config: CropConfig, workers: int) -> Iterator[dict[str, np.ndarray] | str]:
    """`_crop_case` of each record, in manifest order, in ``workers`` spawned processes when more than one."""
    if workers == 1:
        yield from (_crop_case(record, config) for record in records)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked child of a process whose OpenMP pool has run can hang
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_crop_worker)
    try:
        yield from pool.map(_crop_case, records, [config] * len(records), chunksize=4)
    finally:  # on an error, drop the cases not yet started rather than crop them for nothing
        pool.shutdown(wait=True, cancel_futures=True)


def build_crop_cache(manifest: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *,
                     spacing: Sequence[float] = (2.0, 2.0, 2.0), crop_size: Sequence[int] = (48, 48, 48),
                     progress: bool | ProgressFn | None = True, workers: int = 1) -> CropCache:
    """Crop every case of ``manifest`` once (or reuse the cache made with the same config and manifest).

    Args:
        manifest: ``manifest.csv`` or its folder.
        cache_dir: where to write; default ``<manifest dir>/.cache/crops-<key>`` (key of config + manifest).
        spacing, crop_size: `preprocess_case` settings (mm, voxels).
        progress: ``True`` a tqdm bar, a `ProgressFn`, or ``None``.
        workers: processes that crop the cases (1, default: this one); the cache is the same whatever the number.

    Returns:
        the `CropCache` (``reused`` tells whether it was already built).

    Raises:
        ManifestError: no or malformed manifest; CaseIOError: a case file cannot be loaded, or ``cache_dir`` holds
        something that is not a crop cache. Cases without a tumour or a post-treatment pair are skipped with a
        `CropCacheWarning` and listed in ``skipped``. ValueError: ``workers`` < 1.
    """
    # 1. check inputs, fingerprint the manifest
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"build_crop_cache needs workers >= 1, got {workers!r}.")
    config = CropConfig(tuple(spacing), tuple(crop_size))
    path = _manifest_path(manifest)
    records = read_manifest(path)
    key = _cache_key(config, _manifest_fingerprint(path, records))
    directory = (Path(cache_dir).expanduser().resolve() if cache_dir is not None
                 else path.parent / ".cache" / f"crops-{key}")

    # 2. reuse a cache built with the same key
    if (directory / "index.json").is_file():
        if CropCache.open(directory).key == key:
            return _reused(directory)
    elif directory.exists() and any(directory.iterdir()):
        raise CaseIOError(f"{directory} is not empty and is not a crop cache (no index.json); choose another "
                          "cache_dir or empty it.")

    # 3. crop every case into a temporary sibling folder
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    report = resolve_progress(progress, "crop cache", "case")
    entries, skipped = [], []
    crops = _crops(records, config, workers)
    try:
        for i, (record, crop) in enumerate(zip(records, crops)):
            if isinstance(crop, str):
                skipped.append({"case_id": record.case_id, "reason": crop})
                warnings.warn(f"Crop cache: case {record.case_id!r} left out: {crop}.", CropCacheWarning,
                              stacklevel=2)
            else:
                name = f"{record.case_id}.npz"
                np.savez_compressed(tmp / name, **crop)
                entries.append({"case_id": record.case_id, "file": name, "plan": str(crop["plan"]) or None})
            if report:
                report(i + 1, len(records), record.case_id)
        index = {"format": CACHE_FORMAT, "key": key, "manifest": str(path), "config": config.to_dict(),
                 "synthetic": _is_synthetic(path), "cases": entries, "skipped": skipped,
                 "n_manifest": len(records)}
        # 4. swap it in, unless a concurrent build of the same key finished first; replace a stale cache
        return _swap_in(tmp, directory, index)
    finally:
        crops.close()  # stops the workers now when a case failed, not whenever the generator is collected
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _touches_border(labels: np.ndarray) -> bool:
    """Whether any lesion voxel (labels 2-4) lies on a face of the crop."""
    lesion = labels >= 2
    return any(lesion.take(i, axis=a).any() for a in range(3) for i in (0, -1))


def build_whole_lesion_cache(cache: CropCache, *, step: int, largest: int,
                             progress: bool | ProgressFn | None = True) -> CropCache:
    """Whole-lesion crops of the cases of ``cache`` whose lesion does not fit its crop (or reuse them).

    `pipelines.worldmodel.simulate` simulates such a lesion in the smallest crop of
    `pipelines.preprocess.crop_size_ladder` (``cache``'s crop grown by ``step`` voxels a side, same spacing, up to
    ``largest``) that holds it whole, and measures it there, while ``cache`` holds it cut by the training crop.
    This cache holds each of those cases as `simulate` crops it: same npz arrays as `build_crop_cache`, each entry
    with its ``crop_size``. Cases whose lesion fits ``cache``'s crop are not in it (their crops are ``cache``'s); a
    lesion larger than ``largest`` is skipped with its reason. Stored beside ``cache``
    (``<cache>-whole-<step>-<largest>``), written atomically, reused while ``cache`` and the two numbers are the same.

    Raises:
        ValueError: ``step`` < 1 or ``largest`` smaller than ``cache``'s crop.
    """
    from pipelines.preprocess import crop_size_ladder, lesion_fits, preprocess_case

    base = tuple(cache.config.crop_size)
    if step < 1 or largest < max(base):
        raise ValueError(f"build_whole_lesion_cache: step must be >= 1 and largest >= the crop side {max(base)}, got "
                         f"step={step!r}, largest={largest!r}.")
    key = hashlib.sha256(json.dumps([CACHE_FORMAT, cache.key, step, largest]).encode()).hexdigest()[:16]
    directory = cache.directory.parent / f"{cache.directory.name}-whole-{step}-{largest}"
    if (directory / "index.json").is_file() and CropCache.open(directory).key == key:
        return _reused(directory)
    records = {r.case_id: r for r in read_manifest(cache.manifest)}
    sizes = crop_size_ladder(base, step, largest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    report = resolve_progress(progress, "whole-lesion crops", "case")
    entries, skipped = [], []
    try:
        for i, entry in enumerate(cache.entries):
            if _touches_border(cache.load(i)["pre_labels"]):  # only those can be larger than the crop
                case = load_manifest_case(records[entry["case_id"]])
                for size in sizes:
                    sample = preprocess_case(case, spacing=cache.config.spacing, crop_size=size)
                    if lesion_fits(case, sample):
                        break
                else:
                    skipped.append({"case_id": entry["case_id"],
                                    "reason": f"lesion larger than the largest crop ({largest} voxels a side)"})
                    sample = None
                if sample is not None and tuple(size) != base:
                    name = f"{entry['case_id']}.npz"
                    np.savez_compressed(tmp / name, **_crop_arrays(case, sample, entry["case_id"]))
                    entries.append({**entry, "file": name, "crop_size": list(size)})
            if report:
                report(i + 1, len(cache), entry["case_id"])
        index = {"format": CACHE_FORMAT, "key": key, "manifest": str(cache.manifest),
                 "config": cache.config.to_dict(), "synthetic": cache.synthetic, "cases": entries,
                 "skipped": skipped, "whole_lesion": {"of": cache.key, "step": step, "largest": largest}}
        return _swap_in(tmp, directory, index)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ datasets
def random_flips(tensors: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """Flip each sample of a batch along each spatial axis with probability 1/2; all ``tensors`` alike.

    Args:
        tensors: ``(B, C, X, Y, Z)`` tensors of one batch (e.g. image and labels).
        generator: the seeded source of the flips (``(B, 3)`` coin tosses drawn from it).
    """
    b = tensors[0].shape[0]
    coins = torch.rand((b, 3), generator=generator) < 0.5
    out = [t.clone() for t in tensors]
    for i in range(b):
        axes = [2 + a for a in range(3) if coins[i, a]]
        if axes:
            for t in out:
                t[i] = torch.flip(t[i:i + 1], dims=axes)[0]
    return out


def _check_indices(cache: CropCache, indices: Sequence[int] | None) -> list[int]:
    indices = list(range(len(cache))) if indices is None else [int(i) for i in indices]
    if not indices:
        raise ValueError("A crop dataset needs at least one case; got an empty selection.")
    bad = [i for i in indices if not 0 <= i < len(cache)]
    if bad:
        raise IndexError(f"Case indices {bad} are outside the cache's {len(cache)} cases.")
    return indices


class _CropTensors(Dataset):
    """Pre and post crops of the chosen cases, stacked in memory: ``images`` ``(2 N, 1, X, Y, Z)`` float32 in
    [-1, 1] and ``labels`` ``(2 N, 1, X, Y, Z)`` uint8 (pre crops first, then post, each in case order)."""

    def __init__(self, cache: CropCache, indices: Sequence[int] | None = None) -> None:
        self.indices = _check_indices(cache, indices)
        items = [cache.load(i) for i in self.indices]
        self.case_ids = [d["case_id"] for d in items]
        self.images = torch.from_numpy(np.stack([d[k] for k in ("pre", "post") for d in items]))[:, None]
        self.labels = torch.from_numpy(np.stack([d[k] for k in ("pre_labels", "post_labels") for d in items]))[:, None]

    def __len__(self) -> int:
        return self.images.shape[0]

    def _pick(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self), (batch_size,), generator=generator)


class AutoencoderCrops(_CropTensors):
    """Every pre and post CT crop of the chosen cases; item ``i`` is ``(1, X, Y, Z)`` float32 in [-1, 1]."""

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]

    def sample_batch(self, batch_size: int, generator: torch.Generator, augment: bool = True) -> torch.Tensor:
        """``(batch_size, 1, X, Y, Z)`` crops drawn with replacement from ``generator``, randomly flipped."""
        x = self.images[self._pick(batch_size, generator)]
        return random_flips([x], generator)[0] if augment else x

    def sample_labelled_batch(self, batch_size: int, generator: torch.Generator,
                              augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """`sample_batch` with the crops' labels ``(batch_size, 1, X, Y, Z)`` int64, flipped alike (the same draws
        of ``generator`` pick the crops)."""
        idx = self._pick(batch_size, generator)
        x, y = self.images[idx], self.labels[idx].long()
        return tuple(random_flips([x, y], generator)) if augment else (x, y)

    def all_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        for s in range(0, len(self), batch_size):
            yield self.images[s:s + batch_size]


class SegmentationCrops(_CropTensors):
    """(crop, labels) of every pre and post crop; item ``i`` is ``((1, X, Y, Z) float32, (1, X, Y, Z) int64)``.

    With ``reconstructed`` (the autoencoder's reconstructions of the same crops, `autoencoder_reconstructions`), each
    drawn crop is replaced by its reconstruction with probability ``reconstructed_fraction``, its labels unchanged:
    the segmenter then also learns to label the decoded crops the world model simulates (the autoencoder blurs them),
    not only sharp CT. ``all_batches`` then yields the sharp crops and then their reconstructions.
    """

    def __init__(self, cache: CropCache, indices: Sequence[int] | None = None, *,
                 reconstructions: dict[str, torch.Tensor] | None = None, reconstructed_fraction: float = 0.5) -> None:
        """``reconstructions``: `autoencoder_reconstructions` of the whole ``cache``; the chosen cases are taken."""
        super().__init__(cache, indices)
        if not 0.0 <= reconstructed_fraction <= 1.0:
            raise ValueError(f"reconstructed_fraction must be in [0, 1], got {reconstructed_fraction!r}.")
        self.reconstructed = None
        if reconstructions is not None:
            if any(len(reconstructions[k]) != len(cache) for k in ("pre", "post")):
                raise ValueError(f"SegmentationCrops: reconstructions of {len(reconstructions['pre'])} cases do not "
                                 f"match the cache's {len(cache)}.")
            sel = torch.tensor(self.indices)
            self.reconstructed = torch.cat([reconstructions["pre"][sel], reconstructions["post"][sel]])
        self.reconstructed_fraction = float(reconstructed_fraction)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i].long()

    def sample_batch(self, batch_size: int, generator: torch.Generator,
                     augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, 1, X, Y, Z)`` and labels ``(B, 1, X, Y, Z)`` drawn from ``generator``, flipped alike."""
        idx = self._pick(batch_size, generator)
        x, y = self.images[idx], self.labels[idx].long()
        if self.reconstructed is not None:
            use = torch.rand(batch_size, generator=generator) < self.reconstructed_fraction
            x = torch.where(use[:, None, None, None, None], self.reconstructed[idx].float(), x)
        if augment:
            x, y = random_flips([x, y], generator)
        return x, y

    def all_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sources = [self.images] + ([self.reconstructed] if self.reconstructed is not None else [])
        for images in sources:
            for s in range(0, len(self), batch_size):
                yield images[s:s + batch_size].float(), self.labels[s:s + batch_size].long()


class WholeLesionCrops:
    """(crop, labels) of every pre and post crop of a `build_whole_lesion_cache` cache, kept one by one (their sizes
    differ): ``items[i]`` is ``((1, 1, *S) float32, (1, 1, *S) int64)``. With ``reconstructions`` (its
    `autoencoder_reconstructions`), a drawn crop is replaced by its reconstruction with probability
    ``reconstructed_fraction``, as in `SegmentationCrops`."""

    def __init__(self, cache: CropCache, indices: Sequence[int] | None = None, *,
                 reconstructions: Mapping[str, Sequence[torch.Tensor]] | None = None,
                 reconstructed_fraction: float = 0.5) -> None:
        self.indices = _check_indices(cache, indices)
        if not 0.0 <= reconstructed_fraction <= 1.0:
            raise ValueError(f"reconstructed_fraction must be in [0, 1], got {reconstructed_fraction!r}.")
        loaded = [cache.load(i) for i in self.indices]
        self.case_ids = [d["case_id"] for d in loaded]
        self.items = [(torch.from_numpy(d[k].astype(np.float32))[None, None],
                       torch.from_numpy(d[f"{k}_labels"].astype(np.int64))[None, None])
                      for k in ("pre", "post") for d in loaded]
        self.reconstructed = None
        if reconstructions is not None:
            if any(len(reconstructions[k]) != len(cache) for k in ("pre", "post")):
                raise ValueError(f"WholeLesionCrops: reconstructions of {len(reconstructions['pre'])} cases do not "
                                 f"match the cache's {len(cache)}.")
            self.reconstructed = [reconstructions[k][i] for k in ("pre", "post") for i in self.indices]
        self.reconstructed_fraction = float(reconstructed_fraction)

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, generator: torch.Generator, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """One crop ``(1, 1, *S)`` and its labels drawn from ``generator`` (reconstructed at the set rate, flipped
        alike)."""
        i = int(torch.randint(len(self), (1,), generator=generator))
        x, y = self.items[i]
        if self.reconstructed is not None and float(torch.rand(1, generator=generator)) < self.reconstructed_fraction:
            x = self.reconstructed[i].float()
        return tuple(random_flips([x, y], generator)) if augment else (x, y)

    def all_items(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every sharp crop, then every reconstruction (validation)."""
        yield from self.items
        if self.reconstructed is not None:
            yield from ((r.float(), y) for r, (_, y) in zip(self.reconstructed, self.items))


@torch.no_grad()
def autoencoder_reconstructions(cache: CropCache, autoencoder: torch.nn.Module, *, weights_key: str,
                                batch_size: int = 8,
                                progress: bool | ProgressFn | None = None) -> dict[str, torch.Tensor]:
    """The autoencoder's reconstructions ``decode(encode(x))`` (clamped to [-1, 1], as a simulation is) of every pre
    and post crop of ``cache``: ``{"pre", "post"}``, each ``(N, 1, X, Y, Z)`` float16 in case order (for a cache
    whose crops differ in size, `CropCache.uniform` false, a list of ``(1, 1, *S)`` tensors, one case at a time).

    Computed once per cache and autoencoder (``weights_key``: a hash of its weights) and stored beside the crops
    (``reconstructions-<key>.pt``, written atomically), so a resumed or second run does not decode again.
    """
    store = cache.directory / f"reconstructions-{hashlib.sha256(weights_key.encode()).hexdigest()[:16]}.pt"
    if not store.is_file():
        was_training = autoencoder.training
        autoencoder.eval()
        report = resolve_progress(progress, "reconstruct crops", "case")
        out: dict[str, list[torch.Tensor]] = {"pre": [], "post": []}
        try:
            for done, items in _cache_batches(cache, batch_size if cache.uniform else 1):
                for key in out:
                    x = torch.from_numpy(np.stack([d[key] for d in items]).astype(np.float32))[:, None]
                    out[key].append(autoencoder.decode(autoencoder.encode(x)).clamp(-1.0, 1.0).half())
                if report:
                    report(done, len(cache), "")
        finally:
            autoencoder.train(was_training)
        _save_atomic({k: torch.cat(v) if cache.uniform else v for k, v in out.items()}, store)
    return torch.load(store, map_location="cpu", weights_only=True)


@dataclass
class LatentBatch:
    """A batch of the dynamics model's training pairs.

    Attributes:
        pre: ``(B, C, x, y, z)`` scaled latent of the pre-treatment crop.
        post: ``(B, C, x, y, z)`` scaled latent of the post-treatment crop (the diffusion target).
        masks: ``(B, 2, x, y, z)`` tumour and change-region fractions at latent resolution.
        plans: the ``B`` administered plans.
        covariates: the ``B`` patients' manifest covariates (name → value; empty when the manifest has none).
        responses: ``(B, 3)`` measured responses of the pairs (`pipelines.worldmodel.response.measured_response`),
            or ``None`` when not asked for.
    """

    pre: torch.Tensor
    post: torch.Tensor
    masks: torch.Tensor
    plans: list[Plan]
    covariates: list[dict[str, Any]] = field(default_factory=list)
    responses: torch.Tensor | None = None


class LatentPairs(Dataset):
    """The dynamics model's training pairs: autoencoder latents of each case's pre and post crop, masks, plan.

    Build with `LatentPairs.from_cache`, which encodes every crop once with the autoencoder (eval mode, posterior
    mean × ``scale_factor``) and stores the latents beside the crops (``latents-<key>.pt``, keyed by the
    autoencoder's weights and the change margin), so a second run or a resumed one does not encode again.
    No flips: a flipped latent is not the latent of the flipped image.
    """

    def __init__(self, pre: torch.Tensor, post: torch.Tensor, masks: torch.Tensor, plans: list[Plan],
                 case_ids: list[str], covariates: list[dict[str, Any]] | None = None,
                 responses: torch.Tensor | None = None, sampling_weights: torch.Tensor | None = None) -> None:
        covariates = [{} for _ in case_ids] if covariates is None else covariates
        if not (pre.shape == post.shape and pre.shape[0] == masks.shape[0] == len(plans) == len(case_ids)
                == len(covariates)) or (responses is not None and responses.shape[0] != len(plans)):
            raise ValueError(f"LatentPairs: inconsistent sizes pre {tuple(pre.shape)}, post {tuple(post.shape)}, "
                             f"masks {tuple(masks.shape)}, {len(plans)} plans, {len(case_ids)} case ids, "
                             f"{len(covariates)} covariate rows.")
        if sampling_weights is not None and (sampling_weights.shape != (len(plans),)
                                             or not bool(torch.all(sampling_weights >= 0))
                                             or not float(sampling_weights.sum()) > 0):
            raise ValueError(f"LatentPairs: sampling_weights must be {len(plans)} non-negative numbers, not all 0.")
        self.pre, self.post, self.masks, self.plans, self.case_ids = pre, post, masks, plans, case_ids
        self.covariates, self.responses, self.sampling_weights = covariates, responses, sampling_weights

    @classmethod
    def from_cache(cls, cache: CropCache, autoencoder: torch.nn.Module, indices: Sequence[int] | None = None, *,
                   change_margin_mm: float, weights_key: str, batch_size: int = 8,
                   covariates: Mapping[str, dict[str, Any]] | None = None, responses: bool = False,
                   progress: bool | ProgressFn | None = None) -> "LatentPairs":
        """Encode (or read back) the latents of the chosen cases of ``cache``.

        Args:
            autoencoder: a `models.autoencoder.CropAutoencoder` with its trained ``scale_factor``.
            change_margin_mm: margin of `pipelines.worldmodel.regions.change_region`.
            weights_key: identifies the autoencoder's weights (e.g. a hash of its ``model.pt``).
            covariates: case id → covariates (e.g. the manifest's columns); cases not in it get none.
            responses: also measure each pair's response from its crop labels (a dynamics model with a response
                token is teacher-forced with it).

        Raises:
            ManifestError: a chosen case has no plan (the dynamics model is conditioned on it).
        """
        indices = _check_indices(cache, indices)
        _require_plans(cache, indices)
        saved = _cached_latents(cache, autoencoder, change_margin_mm, weights_key, batch_size, progress)
        return cls._of(cache, saved, indices, covariates, responses)

    @classmethod
    def _of(cls, cache: CropCache, saved: dict[str, Any], indices: list[int],
            covariates: Mapping[str, dict[str, Any]] | None, responses: bool) -> "LatentPairs":
        """The pairs ``indices`` of ``cache`` from its `_cached_latents` ``saved`` (all of one crop size)."""
        if cache.uniform:
            sel = torch.tensor(indices)
            pre, post, masks = (saved[k][sel] for k in ("pre", "post", "masks"))
        else:
            sizes = {tuple(saved["pre"][i].shape) for i in indices}
            if len(sizes) != 1:
                raise ValueError(f"LatentPairs: the chosen cases' latents differ in size ({sorted(sizes)}); group "
                                 "them by crop size (`WholeLesionPairs`).")
            pre, post, masks = (torch.stack([saved[k][i] for i in indices]) for k in ("pre", "post", "masks"))
        plans = [Plan.parse(cache.entries[i]["plan"]) for i in indices]
        ids = [cache.entries[i]["case_id"] for i in indices]
        measured = None
        if responses:
            from pipelines.worldmodel.response import measured_response

            labels = (cache.load(i) for i in indices)
            measured = torch.tensor([measured_response(e["pre_labels"], e["post_labels"]) for e in labels],
                                    dtype=torch.float32).reshape(len(indices), -1)
        return cls(pre, post, masks, plans, ids, [dict((covariates or {}).get(c) or {}) for c in ids], measured)

    def __len__(self) -> int:
        return self.pre.shape[0]

    def __getitem__(self, i: int) -> LatentBatch:
        return self._batch(torch.tensor([i]))

    def _batch(self, idx: torch.Tensor) -> LatentBatch:
        return LatentBatch(self.pre[idx], self.post[idx], self.masks[idx], [self.plans[int(i)] for i in idx],
                           [self.covariates[int(i)] for i in idx],
                           None if self.responses is None else self.responses[idx])

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> LatentBatch:
        """``batch_size`` pairs drawn with replacement from ``generator``: uniformly, or in proportion to
        ``sampling_weights`` when set (e.g. `embolic_balance_weights`)."""
        if self.sampling_weights is None:
            return self._batch(torch.randint(len(self), (batch_size,), generator=generator))
        return self._batch(torch.multinomial(self.sampling_weights, batch_size, replacement=True,
                                             generator=generator))

    def all_batches(self, batch_size: int) -> Iterator[LatentBatch]:
        for s in range(0, len(self), batch_size):
            yield self._batch(torch.arange(s, min(s + batch_size, len(self))))


class WholeLesionPairs:
    """The dynamics model's training pairs of a `build_whole_lesion_cache` cache (lesions larger than the training
    crop, each whole in the smallest larger crop), grouped by crop size: ``groups[size]`` is a `LatentPairs` of the
    pairs of that size. A batch holds pairs of one size (latents of different sizes cannot be stacked).

    Build with `WholeLesionPairs.from_cache` (latents encoded one crop at a time, cached beside the crops as
    `LatentPairs.from_cache` caches them).
    """

    def __init__(self, groups: Mapping[tuple[int, ...], LatentPairs]) -> None:
        if not groups:
            raise ValueError("WholeLesionPairs needs at least one pair.")
        self.groups = dict(sorted(groups.items()))
        self.case_ids = [c for g in self.groups.values() for c in g.case_ids]

    @classmethod
    def from_cache(cls, cache: CropCache, autoencoder: torch.nn.Module, indices: Sequence[int] | None = None, *,
                   change_margin_mm: float, weights_key: str,
                   covariates: Mapping[str, dict[str, Any]] | None = None, responses: bool = False,
                   progress: bool | ProgressFn | None = None) -> "WholeLesionPairs":
        """As `LatentPairs.from_cache`, for a cache whose crops differ in size (`CropCache.uniform` false)."""
        indices = _check_indices(cache, indices)
        _require_plans(cache, indices)
        saved = _cached_latents(cache, autoencoder, change_margin_mm, weights_key, 1, progress)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i in indices:
            size = tuple(cache.entries[i].get("crop_size") or cache.config.crop_size)
            by_size.setdefault(size, []).append(i)
        return cls({size: LatentPairs._of(cache, saved, part, covariates, responses)
                    for size, part in by_size.items()})

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups.values())

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> LatentBatch:
        """A crop size drawn in proportion to its number of pairs, then ``batch_size`` pairs of that size drawn
        with replacement (so every pair is as likely as with uniform draws)."""
        groups = list(self.groups.values())
        counts = torch.tensor([len(g) for g in groups], dtype=torch.float64)
        g = int(torch.multinomial(counts, 1, generator=generator))
        return groups[g].sample_batch(batch_size, generator)

    def all_batches(self, batch_size: int) -> Iterator[LatentBatch]:
        """Every pair once, size by size (validation)."""
        for group in self.groups.values():
            yield from group.all_batches(batch_size)


def embolic_group(plan: Plan) -> str:
    """The plan's embolic agents, sorted and joined with " + " ("none" without one): the group the evaluation
    reports its bias by (``bias_by_embolics``) and `embolic_balance_weights` balances."""
    return " + ".join(sorted(plan.embolics)) or "none"


def embolic_balance_weights(plans: Sequence[Plan], power: float) -> torch.Tensor | None:
    """Sampling weights that draw the plans' embolic groups (`embolic_group`) more evenly.

    Each pair weighs ``n_g ** -power`` with ``n_g`` the number of pairs of its group, so a group is drawn in
    proportion to ``n_g ** (1 - power)``: ``power = 0`` keeps the data's proportions (returns ``None``: uniform
    draws), ``0.5`` draws groups by the square root of their size, ``1`` every group equally often. Normalised to
    sum to 1.

    Raises:
        ConfigError: ``power`` outside [0, 1].
    """
    from models.errors import ConfigError

    if not 0.0 <= power <= 1.0:
        raise ConfigError(f"The embolic balance must be in [0, 1] (0 off, 1 every embolic group equally often), "
                          f"got {power!r}.")
    if power == 0.0:
        return None
    groups = [embolic_group(p) for p in plans]
    counts = Counter(groups)
    w = torch.tensor([counts[g] ** -power for g in groups], dtype=torch.float64)
    return (w / w.sum()).float()


def _require_plans(cache: CropCache, indices: Sequence[int]) -> None:
    """Raise `ManifestError` naming the chosen cases of ``cache`` without an administered plan (the dynamics model
    is conditioned on it)."""
    no_plan = [cache.entries[i]["case_id"] for i in indices if not cache.entries[i]["plan"]]
    if no_plan:
        raise ManifestError(f"Cases {no_plan} of {cache.manifest} have no administered plan; the dynamics model "
                            "needs one per case. Fill the manifest's 'plan' column (or the clinical JSON).")


def _cached_latents(cache: CropCache, autoencoder: torch.nn.Module, change_margin_mm: float, weights_key: str,
                    batch_size: int, progress: bool | ProgressFn | None) -> dict[str, Any]:
    """`_encode_all`'s latents of every crop of ``cache``, encoded once per autoencoder (``weights_key``) and change
    margin and stored beside the crops (``latents-<key>.pt``)."""
    tag = hashlib.sha256(f"{weights_key}|{change_margin_mm}".encode()).hexdigest()[:16]
    store = cache.directory / f"latents-{tag}.pt"
    if not store.is_file():
        _encode_all(cache, autoencoder, store, change_margin_mm, batch_size, progress)
    return torch.load(store, map_location="cpu", weights_only=True)


@torch.no_grad()
def _encode_all(cache: CropCache, autoencoder: torch.nn.Module, store: Path, change_margin_mm: float,
                batch_size: int, progress: bool | ProgressFn | None) -> None:
    """Encode every crop of ``cache`` and write ``{"pre", "post", "masks"}`` to ``store`` atomically: each
    ``(N, ...)`` stacked, or for a cache whose crops differ in size (`CropCache.uniform` false) a list of ``N``
    tensors, one crop at a time."""
    from pipelines.worldmodel.regions import latent_masks

    was_training = autoencoder.training
    autoencoder.eval()
    report = resolve_progress(progress, "encode crops", "case")
    pre, post, masks = [], [], []
    uniform = cache.uniform
    try:
        for done, items in _cache_batches(cache, batch_size if uniform else 1):
            for key, out in (("pre", pre), ("post", post)):
                x = torch.from_numpy(np.stack([d[key] for d in items]))[:, None]
                out.append(autoencoder.encode(x))
            masks.extend(latent_masks(d["pre_labels"], autoencoder.downsampling, cache.config.spacing,
                                      change_margin_mm)
                         for d in items)
            if report:
                report(done, len(cache), "")
    finally:
        autoencoder.train(was_training)
    if uniform:
        _save_atomic({"pre": torch.cat(pre), "post": torch.cat(post), "masks": torch.stack(masks)}, store)
    else:
        _save_atomic({"pre": [x[0] for x in pre], "post": [x[0] for x in post], "masks": masks}, store)


def _cache_batches(cache: CropCache, batch_size: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Every case of ``cache`` in order, ``batch_size`` at a time: ``(cases done so far, loaded items)``."""
    for s in range(0, len(cache), batch_size):
        items = [cache.load(i) for i in range(s, min(s + batch_size, len(cache)))]
        yield s + len(items), items


def _save_atomic(data: dict[str, torch.Tensor], store: Path) -> None:
    """``torch.save`` into a temporary file beside ``store``, then renamed (never half-written)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{store.name}.", dir=store.parent)
    os.close(fd)
    torch.save(data, tmp)
    os.replace(tmp, store)
