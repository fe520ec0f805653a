"""`import_hcc_tace_seg`: a local HCC-TACE-Seg download (TCIA, CC BY 4.0) → the project's cohort manifest format.

Per patient, step by step (`_import_patient`):
1. find the patient's DICOM SEG (by modality/SOP class; SeriesNumber 300 preferred) and the CT instances its frames
   reference (by de-identified SOP instance UID, never folder names); the baseline study is the one holding them;
2. split the referenced series into acquisitions (AcquisitionNumber/Time) and read each one with the project's DICOM
   reader (all its checks apply: uniform slice gaps, geometry, voxel limit); tell each acquisition's phase from the
   SEG's aorta vs portal-vein HU (`seg.classify_phase`) and keep the portal-venous one where it is separable;
3. map the Liver and Mass (and Necrosis) segments onto that grid by world position (resampled, with a warning,
   when the SEG's grid differs) and check them (empty tumour, tiny liver, tumour larger than liver);
4. the follow-up: the patient's next study; each axial CT acquisition is aligned rigidly to the baseline and its
   phase told with the baseline's aorta/portal-vein masks; the one matching the baseline phase is kept on its own
   grid (`mewm register` aligns it properly later);
5. the clinical row: covariates, regimen → `Plan`, OS/TTP weeks → months, mRECIST majority (`clinical`);
6. write ``cases/<id>/ct.nii.gz``, ``labels.nii.gz``, ``followup_ct.nii.gz``, ``clinical.json`` and the record.

Every DICOM file is de-identified as it is read (installation key: stable pseudonyms); dates become an interval.
The case ID is the collection's own public pseudonym (``HCC_001``) when the PatientID has that form, else a keyed
pseudonym. The run is resumable: patients with a record are not redone (`report`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import CaseIOError, PatientImportError
from pipelines.caseio.deid import Deidentifier
from pipelines.config import Config, resolve_config
from pipelines.progress import ProgressFn, resolve_progress
from pipelines.realdata.clinical import ClinicalRow, read_clinical_table
from pipelines.realdata.dicom_index import (PatientIndex, StudyIndex, acquisition_folder, index_download,
                                            interval_days, is_axial)
from pipelines.realdata.report import PatientRecord, SKIPPED, read_records, write_record, write_report
from pipelines.realdata.seg import SegMasks, classify_phase, mask_on, read_seg, same_grid
from pipelines.volume import LABELS, Volume

__all__ = ["MIN_LIVER_ML", "PUBLIC_ID", "ImportSummary", "import_hcc_tace_seg"]

MIN_LIVER_ML = 300.0  # an adult liver is 1,200-1,800 ml; a "liver" under this is a partial segmentation
PUBLIC_ID = re.compile(r"HCC_\d{3}")  # TCIA's public pseudonyms of this collection
DATA_CARD = Path(__file__).resolve().parent.parent.parent / "docs" / "DATA_CARD_hcc_tace_seg.md"
PREFERRED_PHASES = ("portal-venous", "arterial", "unknown", "non-contrast")


class ImportSummary(dict):
    """The import report's JSON content (`report.write_report`) with a one-screen `summary()`."""

    def summary(self) -> str:
        c = self["counts"]
        reasons = ", ".join(f"{k} {v}" for k, v in self["skipped_by_reason"].items()) or "none"
        return "\n".join([
            f"HCC-TACE-Seg import into {self['out']} (research use only, not for clinical use)",
            f"  {self['n_patients']} patient(s): {c['imported']} imported, {c['imported with warnings']} imported "
            f"with warnings, {c['skipped']} skipped ({reasons})",
            f"  {self['resumed']} patient(s) taken from an earlier run; {self['seconds']:.1f} s",
            f"  manifest: {self['manifest']}; report: {self['out']}/import_report.md",
            "  next: mewm register --manifest " + str(self["out"])])


def _case_id(patient_id: str, deidentify: Deidentifier) -> str:
    return patient_id if PUBLIC_ID.fullmatch(patient_id) else deidentify.pseudonym(patient_id)


def _read_acquisition(acq, deidentify: Deidentifier, config: Config) -> Volume:
    from pipelines.caseio.dicom import read_dicom_series
    from pipelines.caseio.geometry import to_ras

    with acquisition_folder(acq) as folder:
        volume = read_dicom_series(folder, deidentify=deidentify, config=config.io)
    return to_ras(volume)


def _choose_seg(patient: PatientIndex, record: PatientRecord) -> Any:
    if not patient.segs:
        raise PatientImportError("No DICOM SEG in the download for this patient (the expert segmentation, "
                                 "SeriesNumber 300, is missing: an incomplete download). Download it again.", "no-seg")
    segs = [s for s in patient.segs if s.series_number == 300] or patient.segs
    if len(segs) > 1:
        record.warnings.append(f"{len(segs)} SEG objects found; used the one referencing the most CT instances")
    return max(segs, key=lambda s: max(patient.series_of(s.referenced_sop_uids).values(), default=0))


def _baseline(patient: PatientIndex, seg_file, seg: SegMasks, deidentify: Deidentifier, config: Config,
              record: PatientRecord) -> tuple[StudyIndex, Volume, str]:
    """Steps 1-2: the referenced series, its acquisitions and their phases; returns the chosen CT and its phase."""
    refs = seg_file.referenced_sop_uids | seg.source_sop_uids
    found = patient.series_of(refs)
    if not found:
        raise PatientImportError(f"The SEG references {len(refs)} CT instance(s), none of which is in the download "
                                 f"(missing referenced CT: an incomplete download). Download the baseline CT series "
                                 f"again.", "missing-referenced-ct")
    uid = next(iter(found))
    study, series = patient.find_series(uid)
    n_found = sum(found.values())
    if n_found < len(refs):
        record.warnings.append(f"{len(refs) - n_found} of the {len(refs)} CT instances the SEG references are not in "
                               f"the download; the SEG is mapped by world position onto the slices present")
    acquisitions = [a for a in series.acquisitions() if is_axial(a)]
    calls, volumes, failures = [], {}, []
    for acq in acquisitions:
        try:
            ct = _read_acquisition(acq, deidentify, config)
        except CaseIOError as e:
            failures.append(f"{acq.key}: {e}")
            continue
        call = classify_phase(ct, mask_on(seg.masks.get("aorta"), ct), mask_on(seg.masks.get("portal_vein"), ct))
        calls.append({"acquisition": acq.key, "slices": len(acq.instances), **call.to_dict()})
        volumes.setdefault(call.phase, (ct, acq.key))
    record.baseline.update({"series_description": series.description, "series_number": series.number,
                            "acquisitions": calls, "unreadable_acquisitions": failures})
    if not volumes:
        raise PatientImportError(f"No acquisition of the referenced CT series could be read: {'; '.join(failures)}",
                                 "unreadable-ct")
    phase = next(p for p in PREFERRED_PHASES if p in volumes)
    ct, key = volumes[phase]
    if failures:
        record.warnings.append(f"acquisition(s) not usable ({'; '.join(failures)}); used the {phase} acquisition "
                               f"({key})")
    if len(calls) > 1 and len({c["phase"] for c in calls}) < len(calls):
        record.warnings.append(f"phases not separable by aorta/portal-vein HU ({calls}); used {key}")
    if phase != "portal-venous" and not failures:
        record.warnings.append(f"no portal-venous acquisition was found; used the {phase} one ({key})")
    positions = [sorted(tuple(round(v, 2) for v in i.position) for i in a.instances) for a in acquisitions]
    if len(acquisitions) > 1 and any(p != positions[0] for p in positions[1:]) and not failures:
        record.warnings.append("the acquisitions of the stacked series lie on different slice grids; the SEG was "
                               "mapped onto the chosen one by world position")
    record.baseline.update({"phase": phase, "acquisition": key, "shape": list(ct.shape),
                            "spacing_mm": [round(float(s), 3) for s in ct.spacing]})
    return study, ct, phase


def _labels(ct: Volume, seg: SegMasks, record: PatientRecord, min_liver_ml: float) -> Volume:
    """Step 3: Liver → 1, Mass → 2, Necrosis → 3 on the CT grid, with the mask checks."""
    liver_v = seg.masks.get("liver")
    if liver_v is not None and not same_grid(liver_v, ct):
        record.warnings.append("the SEG's grid differs from its CT's (shape or slice positions); the masks were "
                               "resampled onto the CT by world position (nearest neighbour)")
    liver, tumour = mask_on(seg.masks.get("liver"), ct), mask_on(seg.masks.get("tumour"), ct)
    necrosis = mask_on(seg.masks.get("necrosis"), ct)
    ml = ct.voxel_volume_ml
    if "tumour" not in seg.masks or not tumour.any():
        raise PatientImportError("The SEG's tumour segment ('Mass') is empty or absent on the CT grid: no tumour to "
                                 "plan on.", "empty-tumour")
    if not liver.any():
        raise PatientImportError("The SEG's 'Liver' segment is empty or absent on the CT grid.", "empty-liver")
    liver_ml, tumour_ml = liver.sum() * ml, tumour.sum() * ml
    if tumour_ml > liver_ml:
        raise PatientImportError(f"The SEG's tumour ({tumour_ml:.0f} ml) is larger than its liver ({liver_ml:.0f} ml): "
                                 f"segments swapped or mislabelled (or, if this collection's Liver segment excludes "
                                 f"the tumour, a tumour larger than the remaining liver). Check the SEG.",
                                 "tumour-larger-than-liver")
    if liver_ml < min_liver_ml:
        raise PatientImportError(f"The SEG's liver is {liver_ml:.0f} ml, below the plausible minimum of "
                                 f"{min_liver_ml:.0f} ml: a partial or mislabelled segmentation.", "tiny-liver")
    if seg.unknown_segments:
        record.notes.append(f"SEG segments not used: {', '.join(seg.unknown_segments)}")
    labels = np.zeros(ct.shape, dtype=np.uint8)
    labels[liver] = LABELS["liver"]
    labels[tumour] = LABELS["tumour"]
    labels[necrosis] = LABELS["necrosis"]  # part of the tumour in MeWM's labels (2, 3, 4 are all tumour)
    record.baseline.update({"liver_ml": round(float(liver_ml), 1), "tumour_ml": round(float(tumour_ml), 1)})
    return Volume(labels, ct.affine, "label", "labels")


def _followup(patient: PatientIndex, baseline: StudyIndex, ct: Volume, phase: str, seg: SegMasks,
              deidentify: Deidentifier, config: Config, record: PatientRecord) -> Volume | None:
    """Step 4: the follow-up CT acquisition of the baseline's phase (on its own grid), or None with a warning."""
    from pipelines.realdata.registration import register_ct

    later = [s for s in patient.studies.values() if s.uid != baseline.uid and s.series
             and (interval_days(baseline, s) is None or interval_days(baseline, s) > 0)]
    if not later:
        record.warnings.append("no follow-up CT study in the download: the case has no post-treatment image")
        return None
    study = min(later, key=lambda s: interval_days(baseline, s) or 0)
    days = interval_days(baseline, study)
    aorta, portal = mask_on(seg.masks.get("aorta"), ct), mask_on(seg.masks.get("portal_vein"), ct)
    calls, found, transforms = [], None, {}
    for series in sorted(study.series.values(), key=lambda s: (s.number or 0, s.uid)):
        for acq in series.acquisitions():
            if not is_axial(acq) or len(acq.instances) < config.io.min_slices:
                continue
            try:
                moving = _read_acquisition(acq, deidentify, config)
            except CaseIOError as e:
                calls.append({"series": series.number, "acquisition": acq.key, "error": str(e)})
                continue
            # series of one study share the scanner's frame of reference: align once, reuse for the others
            frame = series.frame_of_reference or series.uid
            if frame not in transforms:
                transforms[frame] = register_ct(ct, moving, stages=("rigid",), iterations=100)
            aligned = transforms[frame].resample(moving, ct)
            call = classify_phase(aligned, aorta, portal)
            calls.append({"series": series.number, "description": series.description, "acquisition": acq.key,
                          **call.to_dict()})
            if found is None and call.phase == phase:
                found = moving
                if phase == "unknown":
                    record.warnings.append(f"the follow-up's phase cannot be told (no aorta/portal-vein masks); used "
                                           f"series {series.number} ({acq.key})")
    record.followup.update({"interval_days": days, "acquisitions": calls})
    if found is None:
        record.warnings.append(f"no follow-up acquisition of the baseline's phase ({phase}) was found "
                               f"({len(calls)} looked at): the case has no post-treatment image")
        return None
    record.followup.update({"phase": phase, "shape": list(found.shape)})
    return found


def _covariates_from_masks(labels: Volume) -> dict[str, Any]:
    from pipelines.preprocess import lesion_components

    lesions = lesion_components(np.isin(labels.array, [LABELS["tumour"], LABELS["necrosis"]]))
    largest = np.argwhere(lesions[0])
    extent = (largest.max(axis=0) - largest.min(axis=0) + 1) * labels.spacing
    return {"n_lesions": len(lesions), "max_diameter_mm": round(float(extent.max()), 1)}


def _import_patient(patient: PatientIndex, clinical: dict[str, ClinicalRow], out: Path, deidentify: Deidentifier,
                    config: Config, min_liver_ml: float) -> PatientRecord:
    from pipelines.caseio.nifti import write_nifti

    case_id = _case_id(patient.patient_id, deidentify)
    record = PatientRecord(patient=case_id, case_id=case_id)
    record.warnings.extend(f"unreadable file {p}" for p in patient.problems)
    try:
        seg_file = _choose_seg(patient, record)
        seg = read_seg(seg_file.path, deidentify)
        study, ct, phase = _baseline(patient, seg_file, seg, deidentify, config, record)
        labels = _labels(ct, seg, record, min_liver_ml)
        followup = _followup(patient, study, ct, phase, seg, deidentify, config, record)
    except PatientImportError as e:
        return record.skip(e.code, str(e))
    row = clinical.get(patient.patient_id)
    if row is None:
        record.warnings.append("no row for this patient in the clinical spreadsheet: no covariates, plan or outcome")
        info: dict[str, Any] = {"covariates": {}}
    else:
        record.warnings.extend(row.warnings)
        record.notes.extend(row.notes)
        info = row.clinical_json()
    info["covariates"].update(_covariates_from_masks(labels))
    info.update({"case_id": case_id, "source": "HCC-TACE-Seg (TCIA, CC BY 4.0, doi:10.7937/TCIA.5FNA-0924)",
                 "synthetic": False, "phase": {"ct": phase, "followup_ct": phase if followup is not None else None},
                 "followup_interval_days": record.followup.get("interval_days"),
                 "labels_source": "expert DICOM SEG (Liver, Mass)", "registered": False})
    folder = out / "cases" / case_id
    folder.mkdir(parents=True, exist_ok=True)
    write_nifti(ct, folder / "ct.nii.gz", dtype=np.int16)
    write_nifti(labels, folder / "labels.nii.gz")
    rel = f"cases/{case_id}"
    record.files = {"ct": f"{rel}/ct.nii.gz", "labels": f"{rel}/labels.nii.gz", "clinical": f"{rel}/clinical.json"}
    if followup is not None:
        write_nifti(followup, folder / "followup_ct.nii.gz", dtype=np.int16)
        record.files["followup_ct"] = f"{rel}/followup_ct.nii.gz"
        info["followup_ct"] = "followup_ct.nii.gz"
    (folder / "clinical.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    outcome = info.get("outcome") or {}
    record.manifest = {"case_id": case_id, "ct": record.files["ct"], "labels": record.files["labels"],
                       "clinical": record.files["clinical"], "plan": info.get("plan"),
                       "time_months": outcome.get("time_months"), "event": outcome.get("event"),
                       "ttp_months": (info.get("ttp") or {}).get("time_months"),
                       "ttp_event": (info.get("ttp") or {}).get("event"), "covariates": info["covariates"]}
    return record.finish()


MANIFESTS = {  # file → what it is for (all in the cohort folder, same rows format)
    "manifest.csv": "every imported case; time_months/event = overall survival (OS)",
    "manifest_ttp.csv": "every imported case; time_months/event = time to progression (TTP), for survival on TTP",
    "manifest_with_plan.csv": "cases whose administered regimen is known (what `mewm train dynamics` needs)",
}


def write_cohort_manifest(out: Path, records: list[PatientRecord]) -> Path:
    """The cohort's manifests (`MANIFESTS`) from the imported records; returns ``manifest.csv``.

    Same format as the virtual cohort's; the clinical JSON (which `load_manifest_case` prefers) holds OS as the
    outcome, while survival training reads the time/event columns, so ``manifest_ttp.csv`` trains on TTP.
    """
    from pipelines.manifest import ManifestRecord, write_manifest

    rows, ttp_rows = [], []
    for r in sorted(records, key=lambda r: r.case_id):
        if r.status == SKIPPED or not r.manifest:
            continue
        m = dict(r.manifest)
        row = ManifestRecord(case_id=m["case_id"], ct=m["ct"], labels=m["labels"], post_ct=m.get("post_ct"),
                             post_labels=m.get("post_labels"), clinical=m["clinical"], plan=m.get("plan"),
                             time_months=m.get("time_months"), event=m.get("event"),
                             covariates=m.get("covariates") or {})
        rows.append(row)
        ttp_rows.append(replace(row, time_months=m.get("ttp_months"), event=m.get("ttp_event")))
    write_manifest(ttp_rows, out / "manifest_ttp.csv")
    write_manifest([r for r in rows if r.plan], out / "manifest_with_plan.csv")
    return write_manifest(rows, out / "manifest.csv")


def import_hcc_tace_seg(src: str | os.PathLike, clinical: str | os.PathLike, out: str | os.PathLike, *,
                        retry_skipped: bool = False, min_liver_ml: float = MIN_LIVER_ML,
                        config: Config | str | os.PathLike | None = None,
                        progress: bool | ProgressFn | None = True) -> ImportSummary:
    """Import a local HCC-TACE-Seg download (see the module docstring); resumable.

    Args:
        src: the download's folder (NBIA layout; any layout works: files are indexed by UIDs).
        clinical: ``HCC-TACE-Seg_clinical_data-V2.xlsx`` (or a .csv with its columns).
        out: the cohort folder to write (created; a rerun into it resumes).
        retry_skipped: redo patients that an earlier run skipped (after fixing the download).

    Raises:
        CaseIOError: ``src`` is not a folder, holds no DICOM, or the spreadsheet cannot be read.
    """
    from pipelines.caseio.deid import installation_salt

    # 1. check inputs
    start = time.perf_counter()
    config = resolve_config(config)
    src, out = Path(src).expanduser(), Path(out).expanduser()
    if not src.is_dir():
        raise CaseIOError(f"--src {src} is not a folder; pass the folder of the HCC-TACE-Seg download.")
    rows = read_clinical_table(clinical)
    deidentify = Deidentifier(installation_salt(config.app.data_dir))
    # 2. index by UIDs; earlier records
    index = index_download(src, deidentify)
    patients = [p for pid, p in sorted(index.items()) if pid]
    if not patients:
        raise CaseIOError(f"No DICOM files with a PatientID under {src}.")
    out.mkdir(parents=True, exist_ok=True)
    done = read_records(out)
    report_progress = resolve_progress(progress, "import HCC-TACE-Seg", "patient")
    resumed = 0
    # 3. one patient at a time; each record written at once (the resume point)
    for n, patient in enumerate(patients):
        case_id = _case_id(patient.patient_id, deidentify)
        old = done.get(case_id)
        if old is not None and (old.status != SKIPPED or not retry_skipped) and \
                all((out / f).exists() for f in old.files.values()):
            resumed += 1
        else:
            done[case_id] = _import_patient(patient, rows, out, deidentify, config, min_liver_ml)
            write_record(out, done[case_id])
        if report_progress:
            report_progress(n + 1, len(patients), case_id)
    # 4. manifest, data card and report from all records
    records = [done[_case_id(p.patient_id, deidentify)] for p in patients]
    manifest = write_cohort_manifest(out, records)
    if DATA_CARD.is_file():
        shutil.copyfile(DATA_CARD, out / "DATA_CARD.md")
    in_sheet_only = sorted(set(rows) - {p.patient_id for p in patients})
    report = write_report(out, records, {
        "spreadsheet_rows_without_images": in_sheet_only,
        "unattributed_unreadable_files": index.get("", PatientIndex("")).problems})
    return ImportSummary(report, out=str(out), manifest=str(manifest), resumed=resumed,
                         seconds=time.perf_counter() - start)
