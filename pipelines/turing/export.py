"""CSV export of a study: every answer with its truth (unblinded), and the summary statistics.

Both are plain CSV (UTF-8, header row) so R, pandas or a spreadsheet read them directly.
"""

from __future__ import annotations

import csv
import io
import math

from pipelines.turing.stats import GroupStats, StudyResults

__all__ = ["ANSWER_COLUMNS", "answers_csv", "summary_rows", "summary_csv"]

ANSWER_COLUMNS = ("study_id", "reader_id", "reader", "role", "item", "truth", "call", "correct", "confidence",
                  "comment", "reading_ms", "answered_at", "case_id", "source")


def _csv(rows: list[dict], columns) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                         for k, v in row.items()})
    return out.getvalue()


def answers_csv(rows: list[dict]) -> str:
    """`StudyStore.answer_rows` as CSV (columns `ANSWER_COLUMNS`)."""
    return _csv(rows, ANSWER_COLUMNS)


def summary_rows(results: StudyResults) -> list[dict]:
    """One row per group: ``overall``, each reader, each confidence level; plus Fleiss' kappa on the overall row."""
    def row(group: str, name: str, stats: GroupStats) -> dict:
        return {"group": group, "name": name, **stats.row()}

    rows = [row("overall", "all readers", results.overall)]
    rows[0].update({"fleiss_kappa": results.agreement.kappa, "kappa_items": results.agreement.items,
                    "kappa_readers": results.agreement.readers})
    rows += [row("reader", name, stats) for name, stats in results.per_reader.items()]
    rows += [row("confidence", str(level), stats) for level, stats in results.by_confidence.items()]
    return rows


def summary_csv(results: StudyResults) -> str:
    rows = summary_rows(results)
    columns = list(rows[0])
    return _csv(rows, columns)
