"""Where study images come from: a cohort (real post-treatment crops and the world model's synthetic ones), or
two folders of NIfTI crops.

Cohort source (`cohort_sources`): cases with a tumour mask and a post-treatment CT, in an order shuffled by the
study's seed. Each case gives at most one *real* item (its true post-treatment CT, cropped) and *synthetic* items
(`WorldModel.simulate` with the case's administered plan, the same crop geometry, generated now, in advance).
Both come out of `pipelines.preprocess.preprocess_case` with the world model's crop and the same HU window, so the
crops differ only in content. The pre-treatment crop of the case is kept as an optional context image.

Folder source (`folder_sources`): ``real/`` and ``synthetic/`` folders of 3D NIfTI crops in HU. Every crop must
have the same shape and voxel size: a different field of view would tell readers which folder an image came from.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.errors import CaseIOError, PlanValidationError, StudySetupError
from pipelines.config import DEFAULT_STEPS
from pipelines.progress import ProgressFn

__all__ = ["SourceCrop", "SourceSet", "cohort_sources", "folder_sources", "NIFTI_SUFFIXES"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True, eq=False)
class SourceCrop:
    """One crop to show: ``hu`` ``(X, Y, Z)`` float32 in RAS voxel order with ``spacing`` mm.

    Attributes:
        truth: ``"real"`` or ``"synthetic"``.
        source: where it came from, for the admin and the export (never shown to readers).
        case_id: the patient (cohort source), or None.
        context_hu: the case's pre-treatment crop on the same grid, or None.
    """

    truth: str
    hu: np.ndarray
    spacing: tuple[float, float, float]
    source: str
    case_id: str | None = None
    context_hu: np.ndarray | None = None


@dataclass
class SourceSet:
    """The crops of a study and what was left out (one line per skipped case or file, with the reason)."""

    crops: list[SourceCrop]
    skipped: list[str] = field(default_factory=list)
    description: dict = field(default_factory=dict)


def _hu(windowed) -> np.ndarray:
    from pipelines.preprocess import unwindow_hu

    return np.asarray(unwindow_hu(windowed.detach().cpu().numpy()[0]), dtype=np.float32)


def cohort_sources(manifest: str | os.PathLike, world, n_real: int, n_synthetic: int, seed: int = 0,
                   steps: int = DEFAULT_STEPS, guidance: float = 2.0, disjoint: bool = False,
                   progress: ProgressFn | None = None) -> SourceSet:
    """``n_real`` real and ``n_synthetic`` synthetic crops from a cohort manifest (see the module docstring).

    Synthetic items are spread over the cases: ``ceil(n_synthetic / usable cases)`` samples per case at most.
    With ``disjoint``, real and synthetic items come from different patients (the first ``n_real`` cases of the
    seeded order give the real items, the others the synthetic ones), so no reader sees a patient twice as a
    real/synthetic pair; by default a patient may give both (the reference design: same patients).

    Raises:
        StudySetupError: bad counts, or the cohort has too few usable cases (the message lists why cases were left
            out). ManifestError: no or malformed manifest.
    """
    from pipelines.manifest import load_manifest_case, read_manifest
    from pipelines.preprocess import preprocess_case

    # 1. check inputs, list the candidate cases in a seeded order
    _check_counts(n_real, n_synthetic)
    records = read_manifest(manifest)
    candidates = [r for r in records if r.labels and r.post_ct]
    skipped = [f"{r.case_id}: no tumour mask or post-treatment CT" for r in records if r not in candidates]
    if n_real > len(candidates):
        raise StudySetupError(f"The cohort has {len(candidates)} case(s) with a post-treatment CT, so at most "
                              f"{len(candidates)} real item(s) (one per case); {n_real} were asked for. Lower the "
                              "number of real items or use a larger cohort (mewm cohort generate).")
    order = [int(i) for i in np.random.default_rng(seed).permutation(len(candidates))]
    real_cases, synthetic_cases = (set(order[:n_real]), set(order[n_real:])) if disjoint else (set(order), set(order))
    if not synthetic_cases:
        raise StudySetupError(f"With real and synthetic items from different patients, {n_real} real item(s) use all "
                              f"{len(candidates)} case(s) of the cohort and leave none to simulate. Lower the number "
                              "of real items, allow the same patients, or use a larger cohort.")
    per_case = max(1, math.ceil(n_synthetic / len(synthetic_cases)))
    crops: list[SourceCrop] = []
    real = synthetic = 0
    size = world.crop

    # 2. walk the cases until both counts are met
    for step, i in enumerate(order):
        if real >= n_real and synthetic >= n_synthetic:
            break
        want_real = real < n_real and i in real_cases
        want_synthetic = synthetic < n_synthetic and i in synthetic_cases
        if not (want_real or want_synthetic):
            continue
        record = candidates[i]
        try:
            case = load_manifest_case(record)
            crop = preprocess_case(case, spacing=size.spacing, crop_size=size.crop_size)
        except CaseIOError as e:
            skipped.append(f"{record.case_id}: {e}")
            continue
        context = _hu(crop.image)
        if want_real:
            crops.append(SourceCrop("real", _hu(crop.post_image), size.spacing,
                                    f"{record.case_id}: true post-treatment CT ({record.post_ct})",
                                    record.case_id, context))
            real += 1
        if want_synthetic:
            if case.plan is None:
                skipped.append(f"{record.case_id}: no administered plan to simulate")
            else:
                k = min(per_case, n_synthetic - synthetic)
                try:
                    result = world.simulate(case, [case.plan], samples=k, seed=int(seed), steps=steps,
                                            guidance=guidance)
                except (CaseIOError, PlanValidationError) as e:
                    skipped.append(f"{record.case_id}: cannot simulate ({e})")
                else:
                    if result.enlarged_crop:  # its crop would not match the real items' size (and is extrapolated)
                        skipped.append(f"{record.case_id}: lesion larger than the model's training crop")
                        continue
                    sim = result.plans[0]
                    for t in range(k):
                        crops.append(SourceCrop(
                            "synthetic", np.asarray(sim.crops_hu[t], np.float32), size.spacing,
                            f"{record.case_id}: simulated after {sim.plan.canonical()} (sample {t}, seed {seed}, "
                            f"{steps} steps, guidance {guidance:g}, weights {world.weights_dir})",
                            record.case_id, context))
                    synthetic += k
        if progress is not None:
            progress(step + 1, len(order), record.case_id)

    # 3. enough?
    if real < n_real or synthetic < n_synthetic:
        reasons = "; ".join(skipped[:8]) or "none"
        raise StudySetupError(f"Only {real} real and {synthetic} synthetic crop(s) could be made from {manifest} "
                              f"({n_real} and {n_synthetic} asked for). Cases left out: {reasons}.")
    description = {"kind": "cohort", "manifest": str(manifest), "weights": str(world.weights_dir),
                   "steps": steps, "guidance": guidance, "samples_per_case": per_case,
                   "patients": "disjoint" if disjoint else "same",
                   "crop": {"spacing": list(size.spacing), "size": list(size.crop_size)}}
    return SourceSet(crops, skipped, description)


def _check_counts(n_real: int, n_synthetic: int) -> None:
    for name, value in (("real", n_real), ("synthetic", n_synthetic)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise StudySetupError(f"The number of {name} items must be a whole number >= 1, got {value!r}.")


def _nifti_files(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise StudySetupError(f"The {what} folder {folder} does not exist or is not a folder.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(NIFTI_SUFFIXES))
    if not files:
        raise StudySetupError(f"The {what} folder {folder} holds no NIfTI crops (*.nii, *.nii.gz).")
    return files


def folder_sources(real_dir: str | os.PathLike, synthetic_dir: str | os.PathLike, n_real: int, n_synthetic: int,
                   seed: int = 0, config=None) -> SourceSet:
    """``n_real`` crops drawn (seeded) from ``real_dir`` and ``n_synthetic`` from ``synthetic_dir``.

    Raises:
        StudySetupError: a missing or empty folder, the same folder twice, too few files, or crops whose shape or
            voxel size differ (the message names two that differ). CaseIOError: a file that cannot be read.
    """
    from pipelines.caseio.readers import load_volume

    _check_counts(n_real, n_synthetic)
    real_dir, synthetic_dir = Path(real_dir).expanduser(), Path(synthetic_dir).expanduser()
    if real_dir.resolve() == synthetic_dir.resolve():
        raise StudySetupError(f"The real and synthetic folders are the same ({real_dir}); give two folders.")
    rng = np.random.default_rng(seed)
    chosen: list[tuple[str, Path]] = []
    for truth, folder, n in (("real", real_dir, n_real), ("synthetic", synthetic_dir, n_synthetic)):
        files = _nifti_files(folder, truth)
        if n > len(files):
            raise StudySetupError(f"The {truth} folder {folder} holds {len(files)} crop(s); {n} were asked for.")
        chosen += [(truth, files[int(j)]) for j in sorted(rng.choice(len(files), size=n, replace=False))]
    crops, first = [], None
    for truth, path in chosen:
        volume = load_volume(path, config=config)
        spacing = tuple(float(s) for s in volume.spacing)
        if first is None:
            first = (path, volume.shape, spacing)
        elif volume.shape != first[1] or not np.allclose(spacing, first[2], atol=1e-3):
            raise StudySetupError(
                f"Crops must share one grid so that the field of view cannot tell real from synthetic: {path.name} "
                f"is {volume.shape} at {_mm(spacing)} mm but {first[0].name} is {first[1]} at {_mm(first[2])} mm. "
                "Resample them to one shape and voxel size.")
        crops.append(SourceCrop(truth, volume.array.astype(np.float32), spacing, str(path.resolve())))
    description = {"kind": "folders", "real_dir": str(real_dir.resolve()),
                   "synthetic_dir": str(synthetic_dir.resolve())}
    return SourceSet(crops, [], description)


def _mm(spacing) -> str:
    return " × ".join(f"{s:g}" for s in spacing)
