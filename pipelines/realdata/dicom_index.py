"""Index a DICOM download by its UIDs (never by folder names), de-identifying every header as it is read.

`index_download(src, deidentify)` reads each file's header once (no pixels) and files it under
patient → study → series → acquisition. Stacked series (an arterial and a portal-venous acquisition at the same
slice positions in one SeriesInstanceUID) are split into `Acquisition`s by AcquisitionNumber, else by
AcquisitionTime, else by repeated slice positions. Dates are de-identified to the year, so the interval between a
patient's studies is computed from the original dates *before* de-identification and only the interval is kept.

The original PatientID is kept in the index only to join the clinical spreadsheet (``TCIA_ID``); it is never written
to an output unless it is the collection's own public pseudonym (see `pipelines.realdata.hcc_tace_seg`).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from pipelines.caseio.deid import Deidentifier

__all__ = ["Instance", "Acquisition", "SeriesIndex", "StudyIndex", "SegFile", "PatientIndex", "index_download",
           "acquisition_folder", "interval_days", "is_axial"]

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclass
class Instance:
    """One CT slice: its (de-identified) SOP instance UID, where it lies, and which acquisition it belongs to."""

    sop_uid: str
    path: Path
    acquisition_number: int | None
    acquisition_time: str
    position: tuple[float, float, float]
    orientation: tuple[float, ...]


@dataclass
class Acquisition:
    """The slices of one acquisition of a series (a phase, when a series stacks several)."""

    key: str  # "acq 2", "time 101640" or "repeat 1": how it was told apart
    instances: list[Instance]

    @property
    def sop_uids(self) -> set[str]:
        return {i.sop_uid for i in self.instances}


@dataclass
class SeriesIndex:
    uid: str
    number: int | None
    description: str
    modality: str
    frame_of_reference: str = ""
    instances: list[Instance] = field(default_factory=list)

    def acquisitions(self) -> list[Acquisition]:
        """Split into acquisitions: AcquisitionNumber, else AcquisitionTime, else repeated positions (in file order)."""
        for attr, label in (("acquisition_number", "acq"), ("acquisition_time", "time")):
            groups: dict = defaultdict(list)
            for inst in self.instances:
                groups[getattr(inst, attr)].append(inst)
            if len(groups) > 1 and all(k not in (None, "") for k in groups):
                return [Acquisition(f"{label} {k}", v) for k, v in sorted(groups.items(), key=lambda kv: str(kv[0]))]
        repeats: list[list[Instance]] = []
        for inst in self.instances:
            pos = tuple(round(p, 2) for p in inst.position)
            for group in repeats:
                if pos not in {tuple(round(p, 2) for p in i.position) for i in group}:
                    group.append(inst)
                    break
            else:
                repeats.append([inst])
        if len(repeats) == 1:
            return [Acquisition("whole series", self.instances)]
        return [Acquisition(f"repeat {n}", g) for n, g in enumerate(repeats, start=1)]


@dataclass
class SegFile:
    """A DICOM SEG object: its path, study, series number and the SOP instance UIDs its frames were derived from."""

    path: Path
    study_uid: str
    series_number: int | None
    referenced_sop_uids: set[str]


@dataclass
class StudyIndex:
    uid: str
    date: dt.date | None  # original date, only to order studies and compute intervals (never written)
    series: dict[str, SeriesIndex] = field(default_factory=dict)


@dataclass
class PatientIndex:
    """Everything found for one patient. ``problems``: files that could not be read (path and reason)."""

    patient_id: str  # the ORIGINAL PatientID (join key with the spreadsheet); never written unless public
    studies: dict[str, StudyIndex] = field(default_factory=dict)
    segs: list[SegFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def series_of(self, sop_uids: set[str]) -> dict[str, int]:
        """How many of ``sop_uids`` each CT series holds (series UID → count), largest first."""
        counts = {}
        for study in self.studies.values():
            for s in study.series.values():
                n = len(sop_uids & {i.sop_uid for i in s.instances})
                if n:
                    counts[s.uid] = n
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def find_series(self, uid: str) -> tuple[StudyIndex, SeriesIndex]:
        for study in self.studies.values():
            if uid in study.series:
                return study, study.series[uid]
        raise KeyError(uid)


def _date(value) -> dt.date | None:
    text = str(value or "").strip()
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date() if len(text) >= 8 else None
    except ValueError:
        return None


def _seg_references(ds) -> set[str]:
    """SOP instance UIDs a SEG's frames were derived from (per-frame derivation), else its ReferencedSeriesSequence."""
    uids: set[str] = set()
    for frame in ds.get("PerFrameFunctionalGroupsSequence", []):
        for der in frame.get("DerivationImageSequence", []):
            for src in der.get("SourceImageSequence", []):
                uids.add(str(src.ReferencedSOPInstanceUID))
    if not uids:
        for ser in ds.get("ReferencedSeriesSequence", []):
            for inst in ser.get("ReferencedInstanceSequence", []):
                uids.add(str(inst.ReferencedSOPInstanceUID))
    return uids


def index_download(src: str | os.PathLike, deidentify: Deidentifier) -> dict[str, PatientIndex]:
    """Index every DICOM file under ``src`` by original PatientID (see the module docstring).

    Files that are not DICOM are ignored; a DICOM file that cannot be read is recorded in its patient's
    ``problems`` when the patient can be told (else under the patient ``""``), never silently dropped.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    patients: dict[str, PatientIndex] = {}
    for path in sorted(p for p in Path(src).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            continue
        except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as e:
            patients.setdefault("", PatientIndex("")).problems.append(f"{path.name}: unreadable ({type(e).__name__})")
            continue
        patient_id = str(ds.get("PatientID", "") or "")
        date = _date(ds.get("StudyDate"))
        patient = patients.setdefault(patient_id, PatientIndex(patient_id))
        modality = str(ds.get("Modality", "") or "")
        sop_class = str(ds.get("SOPClassUID", ""))
        deidentify(ds)
        study = patient.studies.setdefault(str(ds.StudyInstanceUID), StudyIndex(str(ds.StudyInstanceUID), date))
        if modality == "SEG" or sop_class == SEG_STORAGE:
            patient.segs.append(SegFile(path, study.uid, _int(ds.get("SeriesNumber")), _seg_references(ds)))
            continue
        if "Rows" not in ds or "ImagePositionPatient" not in ds or modality != "CT":
            continue
        series = study.series.setdefault(str(ds.SeriesInstanceUID), SeriesIndex(
            str(ds.SeriesInstanceUID), _int(ds.get("SeriesNumber")), str(ds.get("SeriesDescription", "") or ""),
            modality, str(ds.get("FrameOfReferenceUID", "") or "")))
        series.instances.append(Instance(
            str(ds.SOPInstanceUID), path, _int(ds.get("AcquisitionNumber")), str(ds.get("AcquisitionTime", "") or ""),
            tuple(float(v) for v in ds.ImagePositionPatient),
            tuple(float(v) for v in ds.get("ImageOrientationPatient", []) or ())))
    return patients


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@contextmanager
def acquisition_folder(acquisition: Acquisition) -> Iterator[Path]:
    """A temporary folder of links to one acquisition's files, so `read_dicom_series` reads exactly that phase
    (with all its checks: one series, uniform slice gaps, geometry, voxel limit)."""
    tmp = Path(tempfile.mkdtemp(prefix="mewm-acq-"))
    try:
        for n, inst in enumerate(acquisition.instances):
            link = tmp / f"{n:05d}.dcm"
            try:
                os.symlink(inst.path.resolve(), link)
            except OSError:
                shutil.copyfile(inst.path, link)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def interval_days(a: StudyIndex, b: StudyIndex) -> int | None:
    """Days from study ``a`` to study ``b`` (original dates), or None when a date is missing."""
    if a.date is None or b.date is None:
        return None
    return (b.date - a.date).days


def is_axial(acquisition: Acquisition, tol: float = 1e-3) -> bool:
    o = acquisition.instances[0].orientation
    return len(o) == 6 and abs(abs(np.cross(o[:3], o[3:])[2]) - 1.0) < tol
