"""`mewm case info`: what the loader understood about an image (and its masks), as text or JSON.

It calls `load_case` and `case_summary`, exactly as the app does, so every loading error shows up here too.
"""

from __future__ import annotations

import json
import os

from pipelines.caseio.loader import load_case
from pipelines.caseio.summary import CaseSummary, case_summary
from pipelines.config import Config

__all__ = ["case_info_text", "format_summary"]


def _num(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def format_summary(s: CaseSummary) -> str:
    """A readable multi-line report of a `CaseSummary`."""
    lines = [
        f"Case {s.case_id}",
        f"  format           {s.format}" + (f" (series: {s.series_description})" if s.series_description else ""),
        f"  modality         {s.modality}" + ("; rescale slope/intercept applied" if s.rescale_applied else ""),
        f"  de-identified    {'yes' if s.deidentified else 'no (not DICOM: no patient attributes read)'}",
        f"  size             {' x '.join(map(str, s.shape))} voxels",
        f"  spacing          {' x '.join(f'{v:g}' for v in s.spacing_mm)} mm",
        f"  orientation      {s.orientation}" + (f" (reoriented from {s.reoriented_from})" if s.reoriented_from
                                                 else ""),
        f"  origin (RAS)     ({', '.join(f'{v:g}' for v in s.origin_ras_mm)}) mm",
        f"  HU range         {s.hu_min:.0f} to {s.hu_max:.0f} (1st-99th percentile {s.hu_p1:.0f} to {s.hu_p99:.0f})",
    ]
    if not s.has_labels:
        lines.append("  masks            none given (tumour measurements and planning need a tumour mask)")
    else:
        lines.append(f"  liver volume     {_num(s.liver_volume_ml, ' ml')}")
        lines.append(f"  tumours          {s.n_tumours} (total tumour volume {_num(s.tumour_volume_ml, ' ml', 2)})")
        for les in s.lesions:
            lines.append(f"    lesion {les.index}: {les.volume_ml:.2f} ml, max axial diameter "
                         f"{les.max_axial_diameter_mm:.1f} mm, equivalent-sphere diameter "
                         f"{les.equivalent_diameter_mm:.1f} mm")
    if s.has_post_ct:
        lines.append("  post-treatment   CT present")
    if s.covariates:
        lines.append("  covariates       " + ", ".join(f"{k}={v}" for k, v in s.covariates.items()))
    if s.plan:
        lines.append(f"  plan             {s.plan}")
    if s.outcome:
        lines.append(f"  outcome          {s.outcome['time_months']:g} months, "
                     f"{'death observed' if s.outcome['event'] else 'censored'}")
    for note in s.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def case_info_text(path: str | os.PathLike, mask: str | os.PathLike | None = None,
                   liver: str | os.PathLike | None = None, tumour: str | os.PathLike | None = None,
                   series: str | None = None, config: Config | str | os.PathLike | None = None,
                   as_json: bool = False) -> str:
    """Load ``path`` (and masks) with `load_case` and describe it; ``as_json`` gives `CaseSummary.to_dict()`."""
    case = load_case(path, labels=mask, liver=liver, tumour=tumour, series=series, config=config)
    summary = case_summary(case)
    if as_json:
        return json.dumps(summary.to_dict(), indent=2)
    return format_summary(summary)
