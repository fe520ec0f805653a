"""Sample cases shipped with MeWM Workbench (``sample_data/``), listed by a ``manifest.csv``.

Manifest columns (paths relative to the manifest's folder; empty = absent):
``case_id`` (required), ``ct`` (required: a file, or a DICOM folder/.zip), ``labels``, ``post_ct``,
``post_labels``, ``clinical`` (a JSON file read by `pipelines.caseio.parse_clinical`), and optionally
``title`` (shown in the app) and ``dicom`` (a DICOM .zip of the same CT).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from models.errors import ManifestError
from pipelines.case import Case

__all__ = ["SampleCaseInfo", "list_sample_cases", "load_sample_case"]

REQUIRED_COLUMNS = ("case_id", "ct")


@dataclass(frozen=True)
class SampleCaseInfo:
    """One row of the sample manifest, as the app lists it."""

    case_id: str
    title: str
    has_post: bool
    has_dicom: bool


def _root(root: str | os.PathLike | None) -> Path:
    if root is None:
        from pipelines.config import load_config

        root = load_config().app.sample_data_dir
    return Path(root).expanduser()


def _rows(root: Path) -> list[dict[str, str]]:
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise ManifestError(f"No sample manifest at {manifest}. Point the app at a sample folder with "
                            "MEWM_APP__SAMPLE_DATA_DIR or [app] sample_data_dir in the config file.")
    try:
        with manifest.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ManifestError(f"{manifest} lacks the column(s) {', '.join(missing)}; "
                                    f"found {', '.join(reader.fieldnames or []) or 'no header'}.")
            return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"Cannot read the sample manifest {manifest}: {e}") from e


def list_sample_cases(root: str | os.PathLike | None = None) -> list[SampleCaseInfo]:
    """The sample cases in ``root`` (default: the configured ``app.sample_data_dir``), in manifest order.

    A folder without a manifest has no samples (empty list); a malformed manifest raises `ManifestError`.
    """
    root = _root(root)
    if not (root / "manifest.csv").is_file():
        return []
    return [
        SampleCaseInfo(r["case_id"], r.get("title") or r["case_id"], bool(r.get("post_ct")), bool(r.get("dicom")))
        for r in _rows(root)
    ]


def _file(root: Path, row: dict[str, str], column: str) -> Path | None:
    if not row.get(column):
        return None
    path = root / row[column]
    if not path.exists():
        raise ManifestError(f"Sample case {row['case_id']!r}: column {column!r} names {row[column]}, "
                            f"which does not exist in {root}.")
    return path


def load_sample_case(case_id: str, root: str | os.PathLike | None = None) -> Case:
    """Load one sample case by its ``case_id``, through `pipelines.caseio.load_case` (all its checks apply)."""
    from pipelines.caseio import load_case

    root = _root(root)
    rows = {r["case_id"]: r for r in _rows(root)}
    if case_id not in rows:
        raise ManifestError(f"No sample case {case_id!r} in {root / 'manifest.csv'}; "
                            f"known: {', '.join(rows) or 'none'}.")
    row = rows[case_id]
    files = {c: _file(root, row, c) for c in ("labels", "post_ct", "post_labels", "clinical")}
    return load_case(_file(root, row, "ct"), case_id=case_id, **files)
