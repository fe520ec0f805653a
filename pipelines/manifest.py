"""Cohort manifests: one CSV row per case, naming its files (relative to the manifest's folder) and its clinical data.

The virtual cohort writes this format and a user's real cohort is converted into it, so training and scoring
commands run on both. Columns (`MANIFEST_COLUMNS`): ``case_id`` and ``ct`` are required; ``labels``, ``post_ct``,
``post_labels``, ``clinical`` (JSON), ``plan`` (canonical text), ``note``, ``time_months``, ``event`` (0/1) and the
covariates (`COVARIATE_COLUMNS`) may be empty.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import ManifestError

__all__ = ["MANIFEST_COLUMNS", "COVARIATE_COLUMNS", "FILE_COLUMNS", "ManifestRecord", "read_manifest",
           "write_manifest", "load_manifest_case"]

FILE_COLUMNS = ("ct", "labels", "post_ct", "post_labels", "clinical")
COVARIATE_COLUMNS = ("age", "sex", "hbv", "afp", "albumin", "bilirubin", "child_pugh", "child_pugh_score", "bclc",
                     "ecog", "vascular_invasion", "n_lesions", "max_diameter_mm")
MANIFEST_COLUMNS = ("case_id", *FILE_COLUMNS, "plan", "note", "time_months", "event", *COVARIATE_COLUMNS)
REQUIRED_COLUMNS = ("case_id", "ct")


@dataclass
class ManifestRecord:
    """One case of a manifest. File fields are paths (relative as written, absolute after `read_manifest`)."""

    case_id: str
    ct: str
    labels: str | None = None
    post_ct: str | None = None
    post_labels: str | None = None
    clinical: str | None = None
    plan: str | None = None
    note: str | None = None
    time_months: float | None = None
    event: bool | None = None
    covariates: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)  # columns beyond MANIFEST_COLUMNS (e.g. "title"), as text


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_manifest(records: list[ManifestRecord], path: str | os.PathLike) -> Path:
    """Write ``records`` to a CSV manifest at ``path`` (columns `MANIFEST_COLUMNS`, in that order)."""
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(MANIFEST_COLUMNS)
        for r in records:
            base = [r.case_id, r.ct, r.labels, r.post_ct, r.post_labels, r.clinical, r.plan, r.note, r.time_months,
                    r.event]
            w.writerow([_cell(v) for v in base] + [_cell(r.covariates.get(k)) for k in COVARIATE_COLUMNS])
    return path


def _number(text: str, row: int, column: str, kind=float):
    try:
        return kind(text)
    except ValueError as e:
        raise ManifestError(f"Manifest row {row} column {column!r}: {text!r} is not a number.") from e


_INT_COVARIATES = ("child_pugh_score", "ecog", "n_lesions")
_FLOAT_COVARIATES = ("age", "afp", "albumin", "bilirubin", "max_diameter_mm")
_BOOL_COVARIATES = ("hbv", "vascular_invasion")


def _covariate(name: str, text: str, row: int) -> Any:
    """A covariate cell as its type (`pipelines.case.Covariates`): numbers, 0/1 booleans, or text."""
    if name in _FLOAT_COVARIATES:
        return _number(text, row, name)
    if name in _INT_COVARIATES:
        return int(_number(text, row, name))
    if name in _BOOL_COVARIATES:
        if text.lower() not in ("0", "1", "true", "false"):
            raise ManifestError(f"Manifest row {row} column {name!r}: {text!r} is not 0/1.")
        return text.lower() in ("1", "true")
    return text


def read_manifest(path_or_dir: str | os.PathLike, check_files: bool = True) -> list[ManifestRecord]:
    """Read and validate a manifest (``manifest.csv`` itself or its folder); file paths become absolute.

    Raises:
        ManifestError: no manifest, missing required columns, an empty or duplicate case_id, a bad number, or
            (with ``check_files``) a file that does not exist; the message names the row and the column.
    """
    path = Path(path_or_dir)
    if path.is_dir():
        path = path / "manifest.csv"
    if not path.is_file():
        raise ManifestError(f"No manifest at {path}. Generate a cohort with `mewm cohort generate` or write a "
                            f"manifest.csv with columns {', '.join(REQUIRED_COLUMNS)} (and optionally "
                            f"{', '.join(MANIFEST_COLUMNS[2:])}).")
    root = path.parent
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"Cannot read the manifest {path}: {e}") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(f"Manifest {path} lacks the required column(s) {', '.join(missing)}; it has "
                            f"{', '.join(columns) or 'no header'}.")
    records, seen = [], set()
    for i, row in enumerate(rows, start=2):  # row 1 is the header
        get = {k: (row.get(k) or "").strip() for k in MANIFEST_COLUMNS}
        if not get["case_id"]:
            raise ManifestError(f"Manifest {path.name} row {i}: column 'case_id' is empty.")
        if get["case_id"] in seen:
            raise ManifestError(f"Manifest {path.name} row {i}: case_id {get['case_id']!r} appears twice.")
        seen.add(get["case_id"])
        files: dict[str, str | None] = {}
        for col in FILE_COLUMNS:
            if not get[col]:
                if col == "ct":
                    raise ManifestError(f"Manifest {path.name} row {i} ({get['case_id']}): column 'ct' is empty.")
                files[col] = None
                continue
            p = (root / get[col]).resolve()
            if check_files and not p.exists():
                raise ManifestError(f"Manifest {path.name} row {i} ({get['case_id']}) column {col!r}: {get[col]} "
                                    f"does not exist under {root}.")
            files[col] = str(p)
        event = None
        if get["event"]:
            if get["event"] not in ("0", "1", "True", "False", "true", "false"):
                raise ManifestError(f"Manifest {path.name} row {i} column 'event': {get['event']!r} is not 0/1.")
            event = get["event"] in ("1", "True", "true")
        covariates = {k: _covariate(k, get[k], i) for k in COVARIATE_COLUMNS if get[k]}
        records.append(ManifestRecord(
            case_id=get["case_id"], **files, plan=get["plan"] or None, note=get["note"] or None,
            time_months=_number(get["time_months"], i, "time_months") if get["time_months"] else None,
            event=event, covariates=covariates,
            extra={k: (row.get(k) or "").strip() for k in columns if k not in MANIFEST_COLUMNS}))
    return records


def load_manifest_case(record: ManifestRecord, **kwargs: Any):
    """Load one manifest row as a checked `pipelines.case.Case` (via `pipelines.caseio.load_case`).

    The clinical JSON, when present, supplies covariates, plan, note and outcome; otherwise the manifest's
    ``plan``, ``note``, ``time_months`` and ``event`` columns do. ``kwargs`` go to ``load_case``.
    """
    from pipelines.caseio.loader import load_case

    clinical: Any = record.clinical
    if clinical is None:
        clinical = {"plan": record.plan, "note": record.note, "covariates": dict(record.covariates)}
        clinical = {k: v for k, v in clinical.items() if v is not None}
        if record.time_months is not None and record.event is not None:
            clinical["outcome"] = {"time_months": record.time_months, "event": record.event}
    return load_case(record.ct, labels=record.labels, post_ct=record.post_ct, post_labels=record.post_labels,
                     clinical=clinical, case_id=record.case_id, **kwargs)
