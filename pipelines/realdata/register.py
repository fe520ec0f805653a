"""`register_cohort` (`mewm register`): follow-up CT → baseline grid, liver propagated, post-TACE tumour
pseudo-labelled, with a QA report.

Per imported case (one whose import record names a ``followup_ct``), step by step (`_register_case`):
1. register the follow-up to the baseline CT (`registration.register_ct`: rigid, affine, optionally B-spline; the
   affine and deformable stages driven by the baseline liver dilated by `LIVER_MARGIN_MM`);
2. resample the follow-up onto the baseline grid → ``post_ct.nii.gz``;
3. post labels = the baseline label map (the liver is *propagated*: after registration it is taken to lie where it
   lay before), where inside the tumour-centred crop's change region (`pipelines.worldmodel.regions.change_region`,
   the rule `simulate` uses) the project's segmenter labels the registered follow-up: tumour, necrosis, Lipiodol.
   These are **pseudo-labels** (model output, not expert masks): the file is ``post_labels_pseudo.nii.gz`` and the
   clinical JSON says ``post_labels_source: "pseudo-labels ..."`` with the segmenter's weights hash;
4. QA: the liver overlap (Dice) of the segmenter's liver on the follow-up vs the propagated liver, inside the crop,
   before (follow-up only resampled, no transform) and after registration; the mutual-information metric before and
   after; a case whose overlap after registration is below `MIN_LIVER_DICE` is flagged ``qa_pass: false``;
5. the manifest's ``post_ct``/``post_labels`` columns are filled from the updated import records.

Resumable: registered cases are kept unless ``overwrite``. QA in ``registration.json`` and ``registration.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import CaseIOError, ManifestError, RegistrationError
from pipelines.config import Config, resolve_config
from pipelines.progress import ProgressFn, resolve_progress
from pipelines.realdata.registration import register_ct
from pipelines.realdata.report import SKIPPED, PatientRecord, read_records, write_record
from pipelines.volume import LABELS, Volume

__all__ = ["LIVER_MARGIN_MM", "MIN_LIVER_DICE", "RegisterSummary", "register_cohort"]

LIVER_MARGIN_MM = 20.0
MIN_LIVER_DICE = 0.7


class RegisterSummary(dict):
    def summary(self) -> str:
        c = self["counts"]
        return "\n".join([
            f"Registration of {self['cohort']} (research use only, not for clinical use)",
            f"  {c['registered']} registered ({c['qa_flagged']} flagged by QA), {c['kept']} kept from an earlier run, "
            f"{c['no_followup']} without a follow-up CT, {c['failed']} failed; {self['seconds']:.1f} s",
            f"  mean liver Dice (segmenter vs propagated liver, in the crop): before {self['liver_dice_before']}, "
            f"after {self['liver_dice_after']}",
            f"  post-TACE labels are pseudo-labels of the segmenter in {self['segmenter']['dir']}",
            f"  QA: {self['cohort']}/registration.md; manifest updated: {self['cohort']}/manifest.csv"])


def _dice(a: np.ndarray, b: np.ndarray) -> float | None:
    total = int(a.sum() + b.sum())
    return None if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def _correlation(a: Volume, b: Volume, mask: np.ndarray) -> float | None:
    """Pearson correlation of two CTs' HU (clipped to the soft-tissue window) inside ``mask``: model-free QA."""
    x, y = (np.clip(v.array[mask], -200, 400).astype(np.float64) for v in (a, b))
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return None
    return round(float(np.corrcoef(x, y)[0, 1]), 4)


def _segment_crop(case, segmenter, crop) -> tuple[Any, np.ndarray, np.ndarray]:
    """(sample, predicted post labels, pre labels) of the tumour-centred crop of ``case`` (its post CT set)."""
    import torch

    from pipelines.preprocess import preprocess_case

    sample = preprocess_case(case, spacing=crop.spacing, crop_size=crop.crop_size)
    with torch.no_grad():
        predicted = segmenter.predict(sample.post_image.as_tensor()[None].float())[0].numpy().astype(np.uint8)
    return sample, predicted, sample.labels[0].numpy().astype(np.uint8)


def _register_case(record: PatientRecord, cohort: Path, segmenter, crop, seg_info: dict, *, stages, seed: int,
                   iterations: int, config: Config) -> dict[str, Any]:
    from scipy import ndimage

    from pipelines.caseio.geometry import resample_like
    from pipelines.caseio.nifti import write_nifti
    from pipelines.caseio.readers import load_volume
    from pipelines.manifest import ManifestRecord, load_manifest_case
    from pipelines.preprocess import paste_back
    from pipelines.worldmodel.regions import DEFAULT_CHANGE_MARGIN_MM, change_region

    m = record.manifest
    case = load_manifest_case(ManifestRecord(case_id=m["case_id"], ct=str(cohort / m["ct"]),
                                             labels=str(cohort / m["labels"]), clinical=str(cohort / m["clinical"])),
                              config=config)
    followup = load_volume(cohort / record.files["followup_ct"], kind="scalar", config=config, name="follow-up CT")
    # 1-2. register, resample onto the baseline grid
    liver = case.labels.array > 0
    margin = np.maximum(1, np.round(LIVER_MARGIN_MM / case.ct.spacing)).astype(int)
    structure = np.ones(tuple(2 * margin + 1), dtype=bool)
    reg = register_ct(case.ct, followup, stages=stages, seed=seed, iterations=iterations,
                      fixed_mask=ndimage.binary_dilation(liver, structure=structure))
    post_ct = reg.resample(followup, case.ct)
    # 3. propagated liver + pseudo-labels in the crop's change region
    sample, predicted, pre_crop = _segment_crop(replace(case, post_ct=post_ct), segmenter, crop)
    region = change_region(pre_crop, DEFAULT_CHANGE_MARGIN_MM, crop.spacing)
    crop_labels = np.where(region, predicted, pre_crop).astype(np.uint8)
    post_labels = paste_back(crop_labels, sample, case, kind="label", base=case.labels)
    # 4. QA: liver overlap in the crop before (no transform) and after registration
    _, predicted_before, _ = _segment_crop(replace(case, post_ct=resample_like(followup, case.ct)), segmenter, crop)
    near_liver = ndimage.binary_dilation(liver, structure=structure)
    qa = {"liver_hu_correlation_before": _correlation(case.ct, resample_like(followup, case.ct), near_liver),
          "liver_hu_correlation_after": _correlation(case.ct, post_ct, near_liver),
          "liver_dice_before": _dice(predicted_before > 0, pre_crop > 0),
          "liver_dice_after": _dice(predicted > 0, pre_crop > 0), **reg.to_dict()}
    qa["qa_pass"] = qa["liver_dice_after"] is not None and qa["liver_dice_after"] >= MIN_LIVER_DICE
    ml = case.ct.voxel_volume_ml
    tumour = [LABELS["tumour"], LABELS["necrosis"], LABELS["lipiodol"]]
    qa["pseudo_volumes_ml"] = {name: round(float((post_labels.array == v).sum() * ml), 1)
                               for name, v in LABELS.items() if v in tumour}
    qa["tumour_ml_before"] = round(float(np.isin(case.labels.array, tumour).sum() * ml), 1)
    # 5. files, clinical JSON, record
    folder = cohort / Path(m["ct"]).parent
    write_nifti(post_ct, folder / "post_ct.nii.gz", dtype=np.int16)
    write_nifti(Volume(post_labels.array.astype(np.uint8), case.ct.affine, "label", "post labels (pseudo)"),
                folder / "post_labels_pseudo.nii.gz")
    clinical_path = cohort / m["clinical"]
    info = json.loads(clinical_path.read_text())
    info.update({"registered": True, "registration": qa,
                 "post_labels_source": f"pseudo-labels: segmenter {seg_info['dir']} (sha256 "
                                       f"{seg_info['weights_sha256'][:12]}) inside the change region, propagated "
                                       f"baseline labels elsewhere; not expert masks"})
    clinical_path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    rel = Path(m["ct"]).parent
    record.manifest.update({"post_ct": str(rel / "post_ct.nii.gz"),
                            "post_labels": str(rel / "post_labels_pseudo.nii.gz")})
    record.files.update({"post_ct": record.manifest["post_ct"], "post_labels": record.manifest["post_labels"]})
    record.followup["registration"] = qa
    return qa


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 3) if vals else None


def register_cohort(manifest: str | os.PathLike, *, weights_dir: str | os.PathLike | None = None,
                    stages: tuple[str, ...] = ("rigid", "affine"), seed: int = 0, iterations: int = 200,
                    overwrite: bool = False, config: Config | str | os.PathLike | None = None,
                    progress: bool | ProgressFn | None = True) -> RegisterSummary:
    """Register every imported case of the cohort folder ``manifest`` (see the module docstring).

    Raises:
        ManifestError: the folder holds no import records (`mewm import hcc-tace-seg` makes them).
        CheckpointNotFoundError: no segmenter in ``weights_dir``.
    """
    from pipelines.realdata.hcc_tace_seg import write_cohort_manifest
    from pipelines.worldmodel.evaluate import _load_segmenter

    # 1. check inputs, load the segmenter once
    start = time.perf_counter()
    config = resolve_config(config)
    cohort = Path(manifest).expanduser()
    cohort = cohort.parent if cohort.suffix == ".csv" else cohort
    records = read_records(cohort)
    if not records:
        raise ManifestError(f"{cohort} holds no import records (records/*.json); import a download first with "
                            f"`mewm import hcc-tace-seg --src DIR --clinical XLSX --out {cohort}`.")
    segmenter, crop, root = _load_segmenter(weights_dir or config.worldmodel.weights_dir)
    sha = hashlib.sha256((root / "segmentation" / "model.pt").read_bytes()).hexdigest()
    seg_info = {"dir": str(root / "segmentation"), "weights_sha256": sha}
    # 2. one case at a time; each record written at once (the resume point)
    counts = {"registered": 0, "qa_flagged": 0, "kept": 0, "no_followup": 0, "failed": 0}
    rows: list[dict[str, Any]] = []
    todo = [r for r in records.values() if r.status != SKIPPED]
    report = resolve_progress(progress, "register follow-ups", "case")
    for n, record in enumerate(sorted(todo, key=lambda r: r.case_id)):
        row: dict[str, Any] = {"case_id": record.case_id}
        if "followup_ct" not in record.files:
            counts["no_followup"] += 1
            row["status"] = "no follow-up CT"
        elif record.manifest.get("post_ct") and not overwrite and (cohort / record.manifest["post_ct"]).exists():
            counts["kept"] += 1
            row.update(status="kept", **record.followup.get("registration", {}))
        else:
            try:
                qa = _register_case(record, cohort, segmenter, crop, seg_info, stages=tuple(stages), seed=seed,
                                    iterations=iterations, config=config)
                counts["registered"] += 1
                counts["qa_flagged"] += int(not qa["qa_pass"])
                row.update(status="registered", **qa)
            except (RegistrationError, CaseIOError) as e:
                counts["failed"] += 1
                row.update(status="failed", error=str(e))
                record.followup["registration"] = {"error": str(e)}
            write_record(cohort, record)
        rows.append(row)
        if report:
            report(n + 1, len(todo), record.case_id)
    # 3. manifest and QA report
    write_cohort_manifest(cohort, list(records.values()))
    summary = RegisterSummary(
        cohort=str(cohort), counts=counts, segmenter=seg_info, stages=list(stages), seed=seed, iterations=iterations,
        min_liver_dice=MIN_LIVER_DICE, liver_dice_before=_mean([r.get("liver_dice_before") for r in rows]),
        liver_dice_after=_mean([r.get("liver_dice_after") for r in rows]), cases=rows,
        seconds=time.perf_counter() - start)
    (cohort / "registration.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    lines = ["# Registration QA", "", "Research use only, not for clinical use. Post-TACE labels are pseudo-labels "
             f"of the segmenter ({seg_info['dir']}), not expert masks.", "",
             "| case | status | liver HU correlation before | after | liver Dice before | after | MI before | after "
             "| QA |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        qa = "pass" if r.get("qa_pass") else ("flagged" if "qa_pass" in r else "—")
        lines.append(f"| {r['case_id']} | {r['status']} | {_fmt(r.get('liver_hu_correlation_before'))} | "
                     f"{_fmt(r.get('liver_hu_correlation_after'))} | {_fmt(r.get('liver_dice_before'))} | "
                     f"{_fmt(r.get('liver_dice_after'))} | {_fmt(r.get('metric_before'))} | "
                     f"{_fmt(r.get('metric_final'))} | {qa} |")
    (cohort / "registration.md").write_text("\n".join(lines) + "\n")
    return summary
