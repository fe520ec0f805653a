"""`load_case`: the one entry point that turns files into a checked `Case` (CLI, app, cohort manifest reader).

`load_uploaded_case` does the same for bytes uploaded through the web app, in a private temporary folder that is
always removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import CaseIOError, EmptyMaskError, GeometryWarning, UnreadableFileError, VolumeTooLargeError
from pipelines.case import Case, Covariates, Outcome
from pipelines.caseio.checks import check_label_values
from pipelines.caseio.geometry import check_same_grid
from pipelines.caseio.readers import default_deidentifier, load_volume, reader_for
from pipelines.config import Config, resolve_config
from pipelines.volume import LABELS, Volume

__all__ = ["load_case", "load_uploaded_case", "parse_clinical", "pseudonym_for"]

PathLike = str | os.PathLike


def pseudonym_for(ct: Volume) -> str:
    """The default case ID: the DICOM import's keyed-hash patient pseudonym, else ``case-`` + a voxel digest.

    Never a file name or a DICOM PatientID (file names often carry patient names).
    """
    pseudonym = ct.meta.get("patient_pseudonym")
    if pseudonym:
        return str(pseudonym)
    digest = hashlib.sha256(np.ascontiguousarray(ct.array).tobytes())
    digest.update(np.asarray(ct.affine, dtype=np.float64).tobytes())
    return "case-" + digest.hexdigest()[:10]


def parse_clinical(clinical: dict | PathLike | None) -> tuple[Covariates, Any, str | None, Outcome | None]:
    """Covariates, plan, note and outcome from a dict or a JSON file.

    Accepted keys: covariate names (top level, or under ``"covariates"``), ``"plan"`` (text, parsed and validated
    with `models.plan.Plan.parse`), ``"note"`` (procedure note) and
    ``"outcome"`` (``{"time_months": float, "event": bool}``). Other keys are ignored.
    """
    if clinical is None:
        return Covariates(), None, None, None
    if not isinstance(clinical, dict):
        path = Path(clinical)
        try:
            clinical = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UnreadableFileError(f"Clinical file {path.name} is not readable JSON ({e}).") from e
        if not isinstance(clinical, dict):
            raise CaseIOError(f"Clinical file {path.name} must hold a JSON object, got {type(clinical).__name__}.")
    cov_source = clinical.get("covariates", clinical)
    if not isinstance(cov_source, dict):
        raise CaseIOError(f"clinical 'covariates' must be an object, got {type(cov_source).__name__}.")
    try:
        covariates = Covariates.from_dict(cov_source)
    except TypeError as e:
        raise CaseIOError(f"clinical covariates are malformed: {e}") from e
    plan = clinical.get("plan")
    if plan is not None:
        if not isinstance(plan, str):
            raise CaseIOError(f"clinical 'plan' must be text (e.g. 'Epirubicin; Lipiodol'), got {plan!r}.")
        from models.plan import Plan

        plan = Plan.parse(plan)
    note = clinical.get("note")
    if note is not None and not isinstance(note, str):
        raise CaseIOError(f"clinical 'note' must be text, got {type(note).__name__}.")
    outcome = None
    if clinical.get("outcome") is not None:
        out = clinical["outcome"]
        try:
            outcome = Outcome(time_months=float(out["time_months"]), event=_as_bool(out["event"]))
        except (KeyError, TypeError, ValueError) as e:
            raise CaseIOError(f"clinical 'outcome' must be {{'time_months': number, 'event': true/false}}, "
                              f"got {out!r}.") from e
        if not outcome.time_months >= 0:
            raise CaseIOError(f"clinical outcome time_months must be >= 0, got {outcome.time_months}.")
    return covariates, plan, note, outcome


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise ValueError(f"{value!r} is not true/false")


def _load_mask(path: PathLike, ct: Volume, what: str, config: Config) -> Volume:
    mask = load_volume(path, kind="label", config=config, name=Path(path).name)
    _grid(ct, mask, what, config)
    return mask


def _merge_binary(ct: Volume, liver: Volume | None, tumour: Volume | None) -> Volume:
    labels = np.zeros(ct.shape, dtype=np.uint8)
    for mask, label in ((liver, LABELS["liver"]), (tumour, LABELS["tumour"])):
        if mask is not None:
            check_label_values(mask, {0, 1})
            labels[mask.array > 0] = label
    return Volume(labels, ct.affine, "label", "labels")


def load_case(image: PathLike, *, labels: PathLike | None = None, liver: PathLike | None = None,
              tumour: PathLike | None = None, post_ct: PathLike | None = None, post_labels: PathLike | None = None,
              clinical: dict | PathLike | None = None, series: str | None = None, case_id: str | None = None,
              require_tumour: bool = False, config: Config | PathLike | None = None) -> Case:
    """Load and check one case.

    Args:
        image: CT (NIfTI/NRRD/MetaImage file, DICOM series folder, or .zip of a DICOM series).
        labels: multi-label map on the CT grid (0 background, 1 liver, 2 tumour, 3 necrosis, 4 Lipiodol).
        liver, tumour: binary masks (0/1), the alternative to ``labels``; merged into one label map (tumour wins).
        post_ct, post_labels: post-treatment CT and label map, registered to the CT grid.
        clinical: dict or JSON path with covariates and optional ``plan``, ``note``, ``outcome`` (`parse_clinical`).
        series: SeriesInstanceUID to pick when a DICOM folder holds several (see `MultipleSeriesError`).
        case_id: defaults to a pseudonym (`pseudonym_for`), never a DICOM PatientID or a file name.
        require_tumour: an empty (or missing) tumour mask raises `EmptyMaskError` instead of adding a note.

    Raises:
        CaseIOError subclasses for every bad input (see `models.errors`); `GeometryWarning` for near-matches.
    """
    # 1. check inputs
    config = resolve_config(config)
    if labels is not None and (liver is not None or tumour is not None):
        raise CaseIOError("Give either a multi-label map (labels / --mask) or binary liver/tumour masks, not both.")
    # 2. the CT (one de-identification key for all DICOM parts of this case)
    deidentify = default_deidentifier(config) if _is_dicom(image) or _is_dicom(post_ct) else None
    ct = load_volume(image, kind="scalar", series=series, config=config, name=Path(image).name,
                     deidentify=deidentify)
    source = ct.meta["source"]
    # 3. masks on the CT grid
    label_map = None
    if labels is not None:
        label_map = _load_mask(labels, ct, "label map", config)
        check_label_values(label_map)
        tumour_from = label_map.name
    elif liver is not None or tumour is not None:
        liver_v = _load_mask(liver, ct, "liver mask", config) if liver is not None else None
        tumour_v = _load_mask(tumour, ct, "tumour mask", config) if tumour is not None else None
        label_map = _merge_binary(ct, liver_v, tumour_v)
        tumour_from = tumour_v.name if tumour_v is not None else "the masks given (no tumour mask)"
    # 4. tumour present?
    if label_map is None:
        if require_tumour:
            raise EmptyMaskError("No tumour mask was given, but this step needs one. Add a label map (--mask) or a "
                                 "tumour mask (--tumour).")
    elif not np.any(np.isin(label_map.array, [LABELS["tumour"], LABELS["necrosis"], LABELS["lipiodol"]])):
        _empty_tumour(tumour_from, require_tumour, source.notes)
    # 5. post-treatment images
    post_ct_v = post_labels_v = None
    if post_ct is not None:
        post_ct_v = load_volume(post_ct, kind="scalar", config=config, name=Path(post_ct).name,
                                deidentify=deidentify)
        _grid(ct, post_ct_v, "post-treatment CT", config)
    if post_labels is not None:
        post_labels_v = _load_mask(post_labels, ct, "post-treatment label map", config)
        check_label_values(post_labels_v)
    # 6. clinical data, identity
    covariates, plan, note, outcome = parse_clinical(clinical)
    return Case(case_id=case_id or pseudonym_for(ct), ct=ct, labels=label_map, post_ct=post_ct_v,
                post_labels=post_labels_v, covariates=covariates, plan=plan, note=note, outcome=outcome,
                source=source)


def _grid(ct: Volume, other: Volume, what: str, config: Config) -> None:
    """`check_same_grid`, with any `GeometryWarning` also recorded in the CT's source notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GeometryWarning)
        check_same_grid(ct, other, (f"the CT {ct.name}", f"the {what} {other.name}"), config.io)
    for w in caught:
        ct.meta["source"].notes.append(str(w.message))
        warnings.warn(w.message, w.category, stacklevel=3)


def _empty_tumour(name: str, require_tumour: bool, notes: list[str]) -> None:
    if require_tumour:
        raise EmptyMaskError(f"The tumour mask in {name} is empty (no tumour voxels), but this step needs a tumour. "
                             f"Check that the right mask was given and that tumour voxels carry label "
                             f"{LABELS['tumour']} (or 1 in a binary tumour mask).")
    notes.append(f"{name} has no tumour voxels: the case opens, but planning needs a tumour mask")


def _is_dicom(path: PathLike | None) -> bool:
    if path is None or not Path(path).exists():
        return False
    try:
        return reader_for(path).format.startswith("dicom")
    except CaseIOError:
        return False


# ------------------------------------------------------------------------------------------------------- uploads
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_name(name: str, index: int) -> str:
    base = _SAFE.sub("_", Path(str(name).replace("\\", "/")).name).lstrip(".")
    return f"{index:03d}_{base or 'upload'}"


def _write_upload(folder: Path, upload: tuple[str, bytes], index: int, config: Config) -> Path:
    name, data = upload
    if len(data) > config.io.max_file_bytes:
        raise VolumeTooLargeError(f"The upload {Path(name).name} is {len(data) / 2**20:.1f} MiB, over the limit of "
                                  f"{config.io.max_file_bytes / 2**20:.1f} MiB (io.max_file_bytes).")
    path = folder / _safe_name(name, index)
    path.write_bytes(data)
    return path


def load_uploaded_case(image: tuple[str, bytes] | list[tuple[str, bytes]],
                       labels: tuple[str, bytes] | None = None, *, liver: tuple[str, bytes] | None = None,
                       tumour: tuple[str, bytes] | None = None, clinical: dict | None = None,
                       series: str | None = None, case_id: str | None = None, require_tumour: bool = False,
                       config: Config | PathLike | None = None) -> Case:
    """`load_case` for uploaded bytes: each argument is an explicit ``(file name, content)`` pair (no guessing).

    Args:
        image: the CT: one file (NIfTI/NRRD/.mha, or a .zip of a DICOM series), or a list of DICOM slice files
            (the files of one series uploaded together).
        labels / liver / tumour: optional masks, as in `load_case`.

    The bytes are written to a private temporary folder (mode 0700) that is removed when loading ends, whether it
    succeeds or fails; the returned `Case` holds everything in memory. Only the suffix of each name is used.
    """
    config = resolve_config(config)
    with tempfile.TemporaryDirectory(prefix="mewm-upload-") as tmp:
        folder = Path(tmp)
        if isinstance(image, list):
            if not image:
                raise UnreadableFileError("No files were uploaded for the CT.")
            image_path = folder / "dicom"
            image_path.mkdir()
            for i, upload in enumerate(image):
                _write_upload(image_path, upload, i, config)
        else:
            image_path = _write_upload(folder, image, 0, config)
        masks = {key: _write_upload(folder, upload, i + 1, config) if upload is not None else None
                 for i, (key, upload) in enumerate((("labels", labels), ("liver", liver), ("tumour", tumour)))}
        return load_case(image_path, labels=masks["labels"], liver=masks["liver"], tumour=masks["tumour"],
                         clinical=clinical, series=series, case_id=case_id, require_tumour=require_tumour,
                         config=config)
