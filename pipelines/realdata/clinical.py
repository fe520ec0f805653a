"""The HCC-TACE-Seg clinical spreadsheet (``HCC-TACE-Seg_clinical_data-V2.xlsx``, sheet "data table") as typed rows.

One `ClinicalRow` per ``TCIA_ID``: MeWM `Covariates`, the administered regimen as a `Plan` (doses unknown), overall
survival and time to progression in **months** with their event flags, and the mRECIST category agreed by most of
the three readers. Everything the parser could not understand is a line in ``warnings`` (never dropped silently),
and the raw cells are kept in ``raw`` for the clinical JSON.

Column names follow the public loaders of the collection (``TCIA_ID``, ``Sex``, ``age``, ``CPS``, ``PS``, ``BCLC``,
``AFP``, ``chemotherapy``, ``OS``, ``Death_1_StillAliveorLostToFU_0``, ``TTP``, ``Censored_0_progressed_1``,
``1_mRECIST``..``3_mRECIST``, ...); matching ignores case, spaces and underscores. Codings that the published data
dictionary does not pin down for us are documented in `docs/DATA_CARD_hcc_tace_seg.md` and, when a cell does not
fit them, reported as a warning.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import CaseIOError, PlanValidationError
from pipelines.case import Covariates

__all__ = ["SHEET", "WEEKS_PER_MONTH", "ClinicalRow", "read_clinical_table", "regimen_plan", "mrecist_majority",
           "weeks_to_months"]

SHEET = "data table"
WEEKS_PER_MONTH = 365.25 / 12 / 7  # 4.348 weeks in a mean month
MRECIST = ("CR", "PR", "SD", "PD")  # coded 1..4 in the spreadsheet
COLUMNS = {  # field -> accepted header names (normalised: lower case, no spaces/underscores/dashes)
    "id": ("tciaid",), "sex": ("sex", "gender"), "age": ("age",), "hepatitis": ("hepatitis", "hep"),
    "cirrhosis": ("evidenceofcirh", "cirrhosis"), "cps": ("cps", "childpugh"), "ps": ("ps", "performancestatus"),
    "bclc": ("bclc",), "afp": ("afp",), "pvt": ("portalveinthrombosis", "pvt"),
    "vascular_invasion": ("vascularinvasion",), "chemotherapy": ("chemotherapy",),
    "os": ("os",), "os_event": ("death1stillaliveorlosttofu0", "death"), "ttp": ("ttp",),
    "ttp_event": ("censored0progressed1", "progressed"),
}
READER_MRECIST = ("1mrecist", "2mrecist", "3mrecist")


def _norm(name: Any) -> str:
    return re.sub(r"[\s_\-]+", "", str(name).strip().lower())


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() in ("", "NA", "nan")


def weeks_to_months(weeks: float) -> float:
    """Weeks (the spreadsheet's unit for OS and TTP) to months (MeWM's unit): ``weeks / 4.348``."""
    return float(weeks) / WEEKS_PER_MONTH


@dataclass
class ClinicalRow:
    """One patient's spreadsheet row, parsed. ``plan`` is None when the regimen is missing or not understood."""

    tcia_id: str
    covariates: Covariates
    regimen: str | None
    plan: Any | None  # models.plan.Plan
    os_months: float | None
    os_event: bool | None
    ttp_months: float | None
    ttp_event: bool | None
    mrecist: str | None
    mrecist_readers: list[str | None]
    raw: dict[str, Any]
    warnings: list[str] = field(default_factory=list)  # problems: a cell not understood, a missing outcome
    notes: list[str] = field(default_factory=list)  # documented inferences (Lipiodol added to a cTACE regimen)

    def clinical_json(self) -> dict[str, Any]:
        """The keys `pipelines.caseio.parse_clinical` reads, plus the real-data extras (TTP, mRECIST, raw cells)."""
        d: dict[str, Any] = {"covariates": self.covariates.to_dict(), "regimen": self.regimen,
                             "ttp": None if self.ttp_months is None else {"time_months": round(self.ttp_months, 4),
                                                                          "event": self.ttp_event},
                             "response": {"mrecist": self.mrecist, "readers": self.mrecist_readers},
                             "inferred": list(self.notes),
                             "spreadsheet": {k: _jsonable(v) for k, v in self.raw.items()}}
        if self.plan is not None:
            d["plan"] = self.plan.canonical()
            d["protocol"] = self.plan.protocol.value
        if self.os_months is not None and self.os_event is not None:
            d["outcome"] = {"time_months": round(self.os_months, 4), "event": self.os_event}
        return d


def _jsonable(value: Any) -> Any:
    if _missing(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def regimen_plan(regimen: str | None) -> tuple[Any | None, list[str], list[str]]:
    """The administered regimen text as a `Plan` (doses unknown), what was inferred, and what went wrong.

    The spreadsheet names drugs only. Beads ("LC beads", "DC beads") mean DEB-TACE; otherwise MD Anderson's
    conventional TACE delivered the drugs in a Lipiodol emulsion, so Lipiodol is added (and said so). A name the
    Action Base does not know is a warning and no plan (never a guess).
    """
    from models.plan import Plan

    if _missing(regimen):
        return None, [], ["no regimen in the 'chemotherapy' column: the administered plan is unknown"]
    text = str(regimen).strip()
    pieces = [p.strip() for p in re.split(r",|;|\+|/|\band\b", text) if p.strip()]
    try:
        return Plan.parse("; ".join(pieces)), [], []
    except PlanValidationError as e:
        if not str(e.rule or "").startswith("R5"):  # anything but "no embolic agent" is a real problem
            return None, [], [f"regimen {text!r} is not a valid plan ({e}); the administered plan is unknown"]
    notes = [f"regimen {text!r} names no embolic: Lipiodol added (conventional TACE)"]
    try:
        return Plan.parse("; ".join([*pieces, "Lipiodol"])), notes, []
    except PlanValidationError as e:
        return None, notes, [f"regimen {text!r} is not a valid plan ({e}); the administered plan is unknown"]


def mrecist_majority(readers: list[Any]) -> tuple[str | None, list[str | None], list[str]]:
    """The mRECIST category (CR/PR/SD/PD) that most readers gave; ``None`` on a tie or with no reading."""
    parsed, notes = [], []
    for i, value in enumerate(readers, start=1):
        if _missing(value):
            parsed.append(None)
            continue
        text = str(value).strip().upper()
        if text.replace(".0", "").isdigit() and 1 <= int(float(text)) <= 4:
            parsed.append(MRECIST[int(float(text)) - 1])
        elif text in MRECIST:
            parsed.append(text)
        else:
            parsed.append(None)
            notes.append(f"reader {i} mRECIST {value!r} is not CR/PR/SD/PD or 1-4: ignored")
    counts = Counter(p for p in parsed if p is not None)
    if not counts:
        return None, parsed, notes + ["no mRECIST reading"]
    top = counts.most_common()
    if len(top) > 1 and top[0][1] == top[1][1]:
        return None, parsed, notes + [f"mRECIST readers disagree without a majority ({', '.join(map(str, parsed))})"]
    return top[0][0], parsed, notes


def _number(value: Any, what: str, notes: list[str]) -> float | None:
    if _missing(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        notes.append(f"{what} {value!r} is not a number: left empty")
        return None


def _flag(value: Any, what: str, notes: list[str]) -> bool | None:
    if _missing(value):
        return None
    text = str(value).strip().lower()
    if text in ("1", "1.0", "yes", "y", "true"):
        return True
    if text in ("0", "0.0", "no", "n", "false"):
        return False
    notes.append(f"{what} {value!r} is not 0/1: left empty")
    return None


def _covariates(get, notes: list[str]) -> Covariates:
    cov: dict[str, Any] = {}
    sex = get("sex")
    if not _missing(sex):
        s = str(sex).strip().upper()
        cov["sex"] = {"1": "M", "1.0": "M", "M": "M", "MALE": "M", "2": "F", "2.0": "F", "F": "F",
                      "FEMALE": "F"}.get(s)
        if cov["sex"] is None:
            notes.append(f"Sex {sex!r} is not 1/2 or M/F: left empty")
    cov["age"] = _number(get("age"), "age", notes)
    cov["afp"] = _number(get("afp"), "AFP", notes)
    cps = get("cps")
    if not _missing(cps):
        letter = str(cps).strip().upper()[:1]
        if letter in "ABC":
            cov["child_pugh"] = letter
        else:
            notes.append(f"CPS {cps!r} is not a Child-Pugh class A/B/C: left empty")
    ps = _number(get("ps"), "performance status (PS)", notes)
    if ps is not None:
        cov["ecog"] = int(ps)
    bclc = get("bclc")
    if not _missing(bclc):
        m = re.fullmatch(r"(?:stage[\s\-_]*)?([0ABCD])", str(bclc).strip(), re.I)
        if m:
            cov["bclc"] = m.group(1).upper()
        else:
            notes.append(f"BCLC {bclc!r} is not a stage 0/A/B/C/D: left empty")
    hep = get("hepatitis")
    if not _missing(hep):
        text = str(hep).upper()
        cov["hbv"] = bool(re.search(r"HBV|\bB\b", text))
    flags = [_flag(get(k), k, notes) for k in ("vascular_invasion", "pvt")]
    if any(f is not None for f in flags):
        cov["vascular_invasion"] = any(bool(f) for f in flags)
    return Covariates.from_dict({k: v for k, v in cov.items() if v is not None})


def read_clinical_table(path: str | os.PathLike) -> dict[str, ClinicalRow]:
    """Parse the clinical spreadsheet (.xlsx sheet "data table", or a .csv with the same columns) by ``TCIA_ID``.

    Raises:
        CaseIOError: the file cannot be read, has no "data table" sheet, no ``TCIA_ID`` column, or repeats an ID.
    """
    import pandas as pd

    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype=object)
        else:
            sheets = pd.ExcelFile(path).sheet_names
            sheet = next((s for s in sheets if _norm(s) == _norm(SHEET)), None)
            if sheet is None:
                raise CaseIOError(f"Clinical spreadsheet {path.name} has no sheet {SHEET!r} (sheets: "
                                  f"{', '.join(sheets)}). Pass HCC-TACE-Seg_clinical_data-V2.xlsx from the download.")
            frame = pd.read_excel(path, sheet_name=sheet, dtype=object)
    except CaseIOError:
        raise
    except (OSError, ValueError, KeyError, ImportError) as e:
        raise CaseIOError(f"Cannot read the clinical spreadsheet {path.name}: {e}") from e
    headers = {_norm(c): c for c in frame.columns}
    if "tciaid" not in headers:
        raise CaseIOError(f"Clinical spreadsheet {path.name} has no TCIA_ID column; it has "
                          f"{', '.join(map(str, frame.columns))}.")
    rows: dict[str, ClinicalRow] = {}
    for _, series in frame.iterrows():
        raw = {str(c): series[c] for c in frame.columns}

        def get(key: str, raw_norm={_norm(k): v for k, v in raw.items()}) -> Any:
            for name in COLUMNS[key]:
                if name in raw_norm:
                    return raw_norm[name]
            return None

        tcia_id = get("id")
        if _missing(tcia_id):
            continue
        tcia_id = str(tcia_id).strip()
        if tcia_id in rows:
            raise CaseIOError(f"Clinical spreadsheet {path.name}: TCIA_ID {tcia_id!r} appears twice.")
        notes: list[str] = []
        covariates = _covariates(get, notes)
        regimen = None if _missing(get("chemotherapy")) else str(get("chemotherapy")).strip()
        plan, inferred, plan_problems = regimen_plan(regimen)
        os_weeks = _number(get("os"), "OS (weeks)", notes)
        ttp_weeks = _number(get("ttp"), "TTP (weeks)", notes)
        os_event = _flag(get("os_event"), "Death_1_StillAliveorLostToFU_0", notes)
        ttp_event = _flag(get("ttp_event"), "Censored_0_progressed_1", notes)
        if os_weeks is None or os_event is None:
            notes.append("no overall survival (OS weeks and death flag): the case has no outcome")
        raw_norm = {_norm(k): v for k, v in raw.items()}
        mrecist, readers, m_notes = mrecist_majority([raw_norm.get(c) for c in READER_MRECIST])
        rows[tcia_id] = ClinicalRow(
            tcia_id=tcia_id, covariates=covariates, regimen=regimen, plan=plan,
            os_months=None if os_weeks is None else weeks_to_months(os_weeks), os_event=os_event,
            ttp_months=None if ttp_weeks is None else weeks_to_months(ttp_weeks), ttp_event=ttp_event,
            mrecist=mrecist, mrecist_readers=readers, raw=raw, warnings=notes + plan_problems + m_notes, notes=inferred)
    return rows
