"""The import report: one record per patient (imported / imported with warnings / skipped, and why), resumable.

Each patient's record is written atomically to ``<out>/records/<case_id>.json`` as soon as the patient is done; it
is the resume record (a rerun skips patients that have one) and the manifest and reports are rebuilt from all
records at the end: ``import_report.json`` (counts by status and by reason code, every record) and
``import_report.md`` (a table a person reads).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["IMPORTED", "WARNED", "SKIPPED", "PatientRecord", "write_record", "read_records", "write_report"]

IMPORTED, WARNED, SKIPPED = "imported", "imported with warnings", "skipped"


@dataclass
class PatientRecord:
    """What happened to one patient. ``reason_code``/``reason`` only when skipped; ``warnings`` are problems that
    did not stop the import (each says what was done about it); ``notes`` are documented inferences."""

    patient: str  # the collection's public ID (HCC_001) or the keyed pseudonym
    case_id: str
    status: str = IMPORTED
    reason_code: str | None = None
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    baseline: dict[str, Any] = field(default_factory=dict)
    followup: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # relative to the output folder
    manifest: dict[str, Any] = field(default_factory=dict)  # the manifest row (see pipelines.manifest)

    def finish(self) -> "PatientRecord":
        if self.status != SKIPPED:
            self.status = WARNED if self.warnings else IMPORTED
        return self

    def skip(self, code: str, reason: str) -> "PatientRecord":
        self.status, self.reason_code, self.reason = SKIPPED, code, reason
        return self


def write_record(out: Path, record: PatientRecord) -> Path:
    """Write ``record`` atomically (temp file + rename) under ``out/records``."""
    folder = out / "records"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record.case_id}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".json", dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(record), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_records(out: Path) -> dict[str, PatientRecord]:
    """Every record under ``out/records`` by case ID (an unreadable record is ignored: that patient is redone)."""
    records = {}
    for path in sorted((out / "records").glob("*.json")):
        try:
            records[path.stem] = PatientRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
    return records


def write_report(out: Path, records: list[PatientRecord], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``import_report.json`` and ``import_report.md`` from all records; returns the JSON content."""
    status = Counter(r.status for r in records)
    reasons = Counter(r.reason_code for r in records if r.status == SKIPPED)
    report = {"counts": {s: status.get(s, 0) for s in (IMPORTED, WARNED, SKIPPED)},
              "skipped_by_reason": dict(sorted(reasons.items())), "n_patients": len(records), **(extra or {}),
              "patients": [asdict(r) for r in sorted(records, key=lambda r: r.patient)]}
    (out / "import_report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    lines = ["# Import report", "", "Research use only, not for clinical use.", "",
             f"{len(records)} patient(s): " + ", ".join(f"{v} {k}" for k, v in report["counts"].items()), "",
             *[f"{k.replace('_', ' ').capitalize()}: {', '.join(map(str, v))}" for k, v in (extra or {}).items()
               if isinstance(v, list) and v],
             "", "| patient | case | status | why / warnings |", "|---|---|---|---|"]
    for r in sorted(records, key=lambda r: r.patient):
        why = f"**{r.reason_code}**: {r.reason}" if r.status == SKIPPED else "; ".join(r.warnings) or "—"
        lines.append(f"| {r.patient} | {r.case_id} | {r.status} | {why.replace('|', '/')} |")
    (out / "import_report.md").write_text("\n".join(lines) + "\n")
    return report
