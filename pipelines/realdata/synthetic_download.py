"""A tiny *synthetic* stand-in for an HCC-TACE-Seg download, for tests and the CPU smoke run (no patient data).

`write_synthetic_download(out)` writes what a user's NBIA download looks like (see docs/real_data.md), at toy size:
``<out>/HCC_0xx/<date>-<study>-<uid5>/<n>.000000-<description>-<uid5>/1-0kk.dcm`` CT slices (32 x 32 x 16 voxels of
8 mm), a baseline study whose one CT series stacks an arterial and a portal-venous acquisition at identical slice
positions (told apart only by AcquisitionNumber/AcquisitionTime), a follow-up study with one series per phase, one
highdicom DICOM SEG per patient (SeriesNumber 300; segments Liver, Mass, Portal vein, Abdominal aorta) whose frames
reference instances of *both* acquisitions, and ``HCC-TACE-Seg_clinical_data-V2.xlsx`` (sheet "data table").

Each known problem of real downloads appears once (`PROBLEM_CASES`); folder names are deliberately unhelpful for
two patients (the importer must index by DICOM UIDs). Everything is seeded: the same call writes the same voxels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["PROBLEM_CASES", "FixturePatient", "FIXTURE_PATIENTS", "write_synthetic_download"]

SHAPE = (32, 32, 16)  # columns (i), rows (j), slices (k)
SPACING_MM = 8.0
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
# HU of the structures per phase: arterial = bright aorta, hyper-enhancing tumour; portal-venous = bright portal vein.
PHASE_HU = {"arterial": {"aorta": 320.0, "portal": 120.0, "liver": 70.0, "tumour": 160.0},
            "portal-venous": {"aorta": 150.0, "portal": 190.0, "liver": 115.0, "tumour": 80.0}}

PROBLEM_CASES = {
    "HCC_003": "seg-grid-differs",           # SEG frames half a slice off the CT grid: resampled, warning
    "HCC_004": "no-seg",                     # no SEG in the download: skipped
    "HCC_005": "missing-referenced-ct",      # SEG present, the CT series it references is not: skipped
    "HCC_006": "empty-tumour",               # Mass segment without a single voxel: skipped
    "HCC_007": "tiny-liver",                 # Liver segment of a few ml: skipped
    "HCC_008": "tumour-larger-than-liver",   # Mass bigger than Liver (swapped labels): skipped
    "HCC_009": "phases-on-different-grids",  # portal-venous acquisition on other slice positions: warning
    "HCC_010": "missing-slices",             # one portal-venous slice missing: arterial used, warning
}


@dataclass(frozen=True)
class FixturePatient:
    tcia_id: str
    regimen: str | None
    os_weeks: float
    death: int
    mrecist: tuple[object, object, object]
    problem: str | None = None


FIXTURE_PATIENTS = (
    FixturePatient("HCC_001", "Cisplatin, doxorubicin, Mitomycin-C", 60.0, 1, (2, 2, 3)),
    FixturePatient("HCC_002", "doxorubicin LC beads", 120.0, 0, (1, 2, 2)),
    FixturePatient("HCC_003", "Cisplastin, doxorubicin, Mitomycin-C", 35.0, 1, (4, 4, 3), "seg-grid-differs"),
    FixturePatient("HCC_004", "Cisplatin, doxorubicin, Mitomycin-C", 80.0, 1, (3, 3, 3), "no-seg"),
    FixturePatient("HCC_005", "doxorubicin LC beads", 50.0, 0, (2, 2, 2), "missing-referenced-ct"),
    FixturePatient("HCC_006", "Cisplatin, doxorubicin, Mitomycin-C", 44.0, 1, (3, 4, 3), "empty-tumour"),
    FixturePatient("HCC_007", "Cisplatin, doxorubicin, Mitomycin-C", 70.0, 1, (2, 3, 2), "tiny-liver"),
    FixturePatient("HCC_008", "doxorubicin LC beads", 30.0, 1, (4, 4, 4), "tumour-larger-than-liver"),
    FixturePatient("HCC_009", None, 95.0, 0, (1, 1, 2), "phases-on-different-grids"),
    FixturePatient("HCC_010", "Cisplatin, doxorubicin, Mitomycin-C", 25.0, 1, (3, 2, 4), "missing-slices"),
)


def _anatomy(rng: np.random.Generator, shift=(0, 0, 0), tumour_radius: float = 3.0, liver_radii=(8.5, 7.5, 5.5),
             tumour_centre=(11.0, 13.0, 8.0)) -> dict[str, np.ndarray]:
    """Boolean masks of body, liver, tumour, aorta and portal vein on the (i, j, k) grid."""
    i, j, k = np.indices(SHAPE, dtype=np.float64)
    i, j, k = i - shift[0], j - shift[1], k - shift[2]
    body = ((i - 16) / 14.5) ** 2 + ((j - 16) / 12.5) ** 2 <= 1
    liver = ((i - 10) / liver_radii[0]) ** 2 + ((j - 14) / liver_radii[1]) ** 2 + ((k - 8) / liver_radii[2]) ** 2 <= 1
    ti, tj, tk = tumour_centre
    tumour = (i - ti) ** 2 + (j - tj) ** 2 + ((k - tk) * 1.2) ** 2 <= tumour_radius ** 2
    aorta = (i - 19) ** 2 + (j - 20) ** 2 <= 1.6 ** 2
    portal = ((i - 15) ** 2 + (j - 17) ** 2 <= 1.3 ** 2) & (k >= 4) & (k <= 11)
    return {"body": body & (k > -99), "liver": liver & body, "tumour": tumour & body, "aorta": aorta & body,
            "portal": portal & body}


def _render(masks: dict[str, np.ndarray], phase: str, rng: np.random.Generator, lipiodol: bool = False) -> np.ndarray:
    hu = PHASE_HU[phase]
    ct = np.full(SHAPE, -1000.0)
    ct[masks["body"]] = 40.0
    ct[masks["liver"]] = hu["liver"]
    ct[masks["portal"]] = hu["portal"]
    ct[masks["aorta"]] = hu["aorta"]
    ct[masks["tumour"]] = hu["tumour"]
    if lipiodol:
        i, j, k = np.indices(SHAPE)
        centre = np.argwhere(masks["tumour"]).mean(axis=0) if masks["tumour"].any() else (11, 13, 8)
        ct[((i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2 <= 1.1) & masks["tumour"]] = 650.0
    return ct + rng.normal(0.0, 6.0, SHAPE)


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(prefix="1.2.826.0.1.3680043.10.1137.", entropy_srcs=["mewm-hcc-fixture", *map(str, parts)])


def _ct_datasets(ct: np.ndarray, *, patient: str, study_uid: str, series_uid: str, frame_uid: str,
                 series_number: int, description: str, acquisition: int, acq_time: str, study_date: str,
                 z_offset_mm: float = 0.0, origin=(-128.0, -128.0, 0.0), first_instance: int = 1) -> list:
    """One classic CT dataset per k slice (LPS; column index i along +x, row index j along +y)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    out = []
    stored = np.round(ct + 1024).astype(np.uint16)
    for k in range(ct.shape[2]):
        sop = _uid(series_uid, acquisition, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CT_STORAGE, sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CT_STORAGE, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientID = ds.PatientName = patient
        ds.PatientSex, ds.PatientBirthDate = "M", "19500101"
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = study_date
        ds.StudyTime, ds.AcquisitionTime = "100000", acq_time
        ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "", "1", ""
        ds.Modality, ds.ImageType, ds.Manufacturer = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"], "MeWM fixture"
        ds.SeriesDescription, ds.SeriesNumber = description, series_number
        ds.AcquisitionNumber, ds.InstanceNumber = acquisition, first_instance + k
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + z_offset_mm + k * SPACING_MM]
        ds.PixelSpacing = [SPACING_MM, SPACING_MM]
        ds.SliceThickness = SPACING_MM
        ds.Rows, ds.Columns = ct.shape[1], ct.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        out.append(ds)
    return out


def _seg_dataset(sources: list, labels: dict[str, np.ndarray], series_uid: str, plane_shift_mm: float = 0.0):
    """A highdicom BINARY SEG of ``labels`` (each (i, j, k) on the sources' grid), one frame per source slice."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    names = list(labels)
    props = {"Liver": (codes.SCT.Organ, codes.SCT.Liver), "Mass": (codes.SCT.MorphologicallyAbnormalStructure,
                                                                  codes.SCT.Neoplasm),
             "Portal vein": (codes.SCT.Organ, codes.SCT.PortalVein), "Abdominal aorta": (codes.SCT.Organ,
                                                                                        codes.SCT.AbdominalAorta)}
    descriptions = [hd.seg.SegmentDescription(n + 1, name, *props[name], hd.seg.SegmentAlgorithmTypeValues.MANUAL)
                    for n, name in enumerate(names)]
    pixels = np.stack([np.stack([labels[name][:, :, k].T for name in names], axis=-1)
                       for k in range(len(sources))]).astype(np.uint8)  # (frames, rows, cols, segments)
    kwargs = {}
    if plane_shift_mm:
        kwargs["plane_positions"] = [hd.PlanePositionSequence(
            hd.CoordinateSystemNames.PATIENT,
            [float(v) + (plane_shift_mm if a == 2 else 0.0) for a, v in enumerate(ds.ImagePositionPatient)])
            for ds in sources]
        kwargs["pixel_measures"] = hd.PixelMeasuresSequence(pixel_spacing=[SPACING_MM, SPACING_MM],
                                                            slice_thickness=SPACING_MM)
        kwargs["plane_orientation"] = hd.PlaneOrientationSequence(hd.CoordinateSystemNames.PATIENT,
                                                                  [1, 0, 0, 0, 1, 0])
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=series_uid, series_number=300,
        sop_instance_uid=_uid(series_uid, "sop"), instance_number=1, manufacturer="MeWM fixture",
        manufacturer_model_name="synthetic", software_versions="1", device_serial_number="0",
        omit_empty_frames=False, **kwargs)


def _save(datasets: list, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n, ds in enumerate(datasets, start=1):
        ds.save_as(folder / f"1-{n:03d}.dcm", enforce_file_format=True)


def _write_patient(root: Path, p: FixturePatient, index: int) -> None:
    rng = np.random.default_rng(1000 + index)
    frame_uid = _uid(p.tcia_id, "frame")
    pre_study, post_study = _uid(p.tcia_id, "study", 1), _uid(p.tcia_id, "study", 2)
    radii = (1.2, 1.2, 1.0) if p.problem == "tiny-liver" else (8.5, 7.5, 5.5)
    masks = _anatomy(rng, liver_radii=radii, tumour_radius={"tumour-larger-than-liver": 9.0, "tiny-liver": 0.8}.get(
                         p.problem or "", 3.0),
                     tumour_centre=(10.0, 14.0, 8.0) if p.problem == "tiny-liver" else (11.0, 13.0, 8.0))
    # 1. baseline: one series stacking the arterial (acquisition 1) and portal-venous (acquisition 2) phases
    stacked_uid = _uid(p.tcia_id, "series", 3)
    arterial = _ct_datasets(_render(masks, "arterial", rng), patient=p.tcia_id, study_uid=pre_study,
                            series_uid=stacked_uid, frame_uid=frame_uid, series_number=3,
                            description="ABD LIVER 3 PHASE", acquisition=1, acq_time="101530", study_date="20010102")
    portal = _ct_datasets(_render(masks, "portal-venous", rng), patient=p.tcia_id, study_uid=pre_study,
                          series_uid=stacked_uid, frame_uid=frame_uid, series_number=3,
                          description="ABD LIVER 3 PHASE", acquisition=2, acq_time="101640", study_date="20010102",
                          z_offset_mm=4.0 if p.problem == "phases-on-different-grids" else 0.0,
                          first_instance=SHAPE[2] + 1)
    # 2. the SEG references arterial slices in the lower half and portal-venous slices in the upper half
    sources = arterial[: SHAPE[2] // 2] + portal[SHAPE[2] // 2:]
    if p.problem == "phases-on-different-grids":
        sources = arterial
    tumour = np.zeros(SHAPE, bool) if p.problem == "empty-tumour" else masks["tumour"]
    seg_labels = {"Liver": masks["liver"], "Mass": tumour, "Portal vein": masks["portal"],
                  "Abdominal aorta": masks["aorta"]}
    seg = _seg_dataset(sources, seg_labels, _uid(p.tcia_id, "seg"),
                       plane_shift_mm=4.0 if p.problem == "seg-grid-differs" else 0.0)
    if p.problem == "missing-slices":
        del portal[9]
    # 3. follow-up: shifted patient, treated tumour, one series per phase
    post_masks = _anatomy(rng, shift=(1, -1, 0), tumour_radius=2.2)
    lipiodol = p.regimen is not None and "bead" not in p.regimen.lower()
    post_frame = _uid(p.tcia_id, "frame-fu")
    post_series = [
        _ct_datasets(_render(post_masks, phase, rng, lipiodol), patient=p.tcia_id, study_uid=post_study,
                     series_uid=_uid(p.tcia_id, "fu", n), frame_uid=post_frame, series_number=n,
                     description=f"CT ABD {n}", acquisition=1, acq_time=t, study_date="20010305",
                     origin=(-124.0, -132.0, 4.0))
        for n, phase, t in ((2, "arterial", "093020"), (4, "portal-venous", "093130"))]
    # 4. files in the NBIA layout (folder names are not trusted by the importer)
    base = root / p.tcia_id
    pre_dir = base / f"01-02-2001-NA-ABD LIVER-{pre_study[-5:]}"
    post_dir = base / f"03-05-2001-NA-CT ABD-{post_study[-5:]}"
    if p.problem != "missing-referenced-ct":
        _save(arterial + portal, pre_dir / f"3.000000-ABD LIVER 3 PHASE-{stacked_uid[-5:]}")
    for n, datasets in zip((2, 4), post_series):
        _save(datasets, post_dir / f"{n}.000000-CT ABD {n}-{datasets[0].SeriesInstanceUID[-5:]}")
    if p.problem != "no-seg":
        # HCC_002's SEG sits in the follow-up study's folder: only its UIDs say where it belongs
        seg_home = post_dir if p.tcia_id == "HCC_002" else pre_dir
        _save([seg], seg_home / f"300.000000-Segmentation-{seg.SeriesInstanceUID[-5:]}")


def _write_clinical(path: Path, patients: tuple[FixturePatient, ...]) -> None:
    import pandas as pd

    rows = []
    for n, p in enumerate(patients):
        rows.append({
            "TCIA_ID": p.tcia_id, "Sex": 1 + n % 2, "age": 55 + n, "Hepatitis": ["HCV", "HBV", "No"][n % 3],
            "Evidence_of_cirh": n % 2, "CPS": "AB"[n % 2], "PS": n % 2,
            "BCLC": ["Stage-A", "Stage-B", "Stage-C"][n % 3],
            "CLIP_Score": f"Stage_{n % 3}", "Okuda": "Stage I", "TNM": "Stage-II", "AFP": 10.0 * (n + 1),
            "tumor_nodul": n % 2, "Tr_Size": None if n % 2 else 40 + n, "Portal Vein Thrombosis": int(n == 3),
            "Vascular invasion": int(n == 3), "Metastasis": 0, "chemotherapy": p.regimen,
            "Interval_BL": 14, "Interval_FU": 60, "TTP": p.os_weeks / 2, "Censored_0_progressed_1": 1,
            "OS": p.os_weeks, "Death_1_StillAliveorLostToFU_0": p.death,
            "1_mRECIST": p.mrecist[0], "2_mRECIST": p.mrecist[1], "3_mRECIST": p.mrecist[2],
        })
    rows.append({"TCIA_ID": "HCC_099", "Sex": 1, "age": 60, "chemotherapy": "doxorubicin LC beads", "OS": 40,
                 "Death_1_StillAliveorLostToFU_0": 1})  # a spreadsheet row whose images were not downloaded
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        pd.DataFrame(rows).to_excel(writer, sheet_name="data table", index=False)


def write_synthetic_download(out: str | os.PathLike, patients: tuple[FixturePatient, ...] = FIXTURE_PATIENTS) -> Path:
    """Write the synthetic download into ``out`` (created); return the clinical spreadsheet's path."""
    import warnings

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # highdicom: "HCC_001" as a one-component person name is what TCIA ships
        warnings.filterwarnings("ignore", message=".*person name.*", category=UserWarning)
        for n, p in enumerate(patients):
            _write_patient(root, p, n)
    (root / "README_SYNTHETIC.txt").write_text(
        "Synthetic stand-in for an HCC-TACE-Seg download written by MeWM Workbench "
        "(pipelines/realdata/synthetic_download.py). Not patient data.\n")
    clinical = root / "HCC-TACE-Seg_clinical_data-V2.xlsx"
    _write_clinical(clinical, patients)
    return clinical
