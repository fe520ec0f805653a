"""Sample cases shipped with MeWM Workbench (``sample_data/``): a cohort folder in the manifest format of
`pipelines.manifest` (the same format `mewm cohort generate` writes and a user's real cohort is converted into).

Optional manifest columns used here: ``title`` (shown in the app). A DICOM copy of a case's CT is found at
``dicom/<case_id>/`` (the cohort generator's layout).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from models.errors import ManifestError
from pipelines.case import Case
from pipelines.manifest import ManifestRecord, load_manifest_case, read_manifest

__all__ = ["SampleCaseInfo", "list_sample_cases", "load_sample_case", "sample_dicom_dir", "resolve_case"]


@dataclass(frozen=True)
class SampleCaseInfo:
    """One sample case, as the app lists it."""

    case_id: str
    title: str
    has_post: bool
    has_dicom: bool


def _root(root: str | os.PathLike | None) -> Path:
    if root is None:
        from pipelines.config import load_config

        root = load_config().app.sample_data_dir
    return Path(root).expanduser()


def _title(r: ManifestRecord) -> str:
    if r.extra.get("title"):
        return r.extra["title"]
    cov = r.covariates
    parts = [r.case_id]
    if cov.get("n_lesions") is not None:
        parts.append(f"{cov['n_lesions']} lesion{'s' if cov['n_lesions'] != 1 else ''}")
    if cov.get("bclc"):
        parts.append(f"BCLC {cov['bclc']}")
    if cov.get("child_pugh"):
        parts.append(f"Child-Pugh {cov['child_pugh']}")
    if r.post_ct:
        parts.append("with post-TACE CT")
    return " · ".join(parts)


def sample_dicom_dir(case_id: str, root: str | os.PathLike | None = None) -> Path | None:
    """The DICOM series folder of a sample case, when the samples carry one."""
    d = _root(root) / "dicom" / case_id
    return d if d.is_dir() else None


def list_sample_cases(root: str | os.PathLike | None = None) -> list[SampleCaseInfo]:
    """The sample cases in ``root`` (default: the configured ``app.sample_data_dir``), in manifest order.

    A folder without a manifest has no samples (empty list); a malformed manifest raises `ManifestError`.
    """
    root = _root(root)
    if not (root / "manifest.csv").is_file():
        return []
    return [SampleCaseInfo(r.case_id, _title(r), bool(r.post_ct), sample_dicom_dir(r.case_id, root) is not None)
            for r in read_manifest(root)]


def load_sample_case(case_id: str, root: str | os.PathLike | None = None) -> Case:
    """Load one sample case by its ``case_id``, through `pipelines.caseio.load_case` (all its checks apply)."""
    root = _root(root)
    records = {r.case_id: r for r in read_manifest(root)}
    if case_id not in records:
        raise ManifestError(f"No sample case {case_id!r} in {root / 'manifest.csv'}; "
                            f"known: {', '.join(records) or 'none'}.")
    return load_manifest_case(records[case_id])


def resolve_case(spec: str | os.PathLike, root: str | os.PathLike | None = None) -> Case:
    """Load the case a command line names (``mewm simulate --case``), in this order:

    - ``MANIFEST.csv#ID`` (or ``COHORT_DIR#ID``): row ``ID`` of that manifest;
    - a case folder of a cohort, ``<cohort>/cases/<ID>``: row ``ID`` of ``<cohort>/manifest.csv``;
    - otherwise a sample case id (`load_sample_case`, samples in ``root``).

    Raises:
        ManifestError: no such manifest, row, case folder or sample; the message lists what was looked for.
    """
    text = str(spec)
    if "#" in text:
        manifest, _, case_id = text.rpartition("#")
        return _manifest_row(read_manifest(manifest), case_id, manifest)
    folder = Path(text).expanduser()
    if folder.is_dir():
        cohort = folder.resolve().parent.parent
        if folder.resolve().parent.name != "cases" or not (cohort / "manifest.csv").is_file():
            raise ManifestError(f"{folder} is a folder but not a case folder of a cohort (<cohort>/cases/<ID> with "
                                f"<cohort>/manifest.csv). Pass MANIFEST.csv#ID or a sample case id instead.")
        return _manifest_row(read_manifest(cohort), folder.resolve().name, cohort / "manifest.csv")
    try:
        return load_sample_case(text, root)
    except ManifestError as e:
        raise ManifestError(f"{e} A case may also be given as a cohort case folder (<cohort>/cases/<ID>) or as "
                            f"MANIFEST.csv#ID.") from e


def _manifest_row(records: list[ManifestRecord], case_id: str, where: str | os.PathLike) -> Case:
    for record in records:
        if record.case_id == case_id:
            return load_manifest_case(record)
    known = ", ".join(r.case_id for r in records[:10]) + (" ..." if len(records) > 10 else "")
    raise ManifestError(f"No case {case_id!r} in the manifest {where}; it has {known or 'no cases'}.")
