"""The ``guideline`` policy: a deterministic rule set over tumour burden, liver function and covariates.

These rules were written by the MeWM Workbench authors from general TACE practice (conventional TACE for most
intermediate-stage HCC, drug-eluting beads to limit systemic drug exposure, platinum combinations only for large
burden with good liver reserve, bland or no chemo-embolisation for poor liver function or performance status).
They are not learned from data and not validated on patients: a transparent, offline baseline and the default
candidate generator of the plan search. Research use only. The rule table and its sources:
``models/cards/policy_guideline.md``.

Every rule that fires is named (``G1``...) in the rationale, with the measured values it used, so a reader can
check the reasoning. Tumour burden comes from the case's tumour mask (`pipelines.caseio.summary.case_summary`);
without a mask, from the covariates ``n_lesions`` / ``max_diameter_mm``; without either, the rationale says the
burden is unknown. Missing covariates are said, never guessed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from models.errors import PolicyError
from models.plan import Plan, Protocol
from pipelines.case import Case
from pipelines.policy.base import Proposal

__all__ = ["GuidelinePolicy", "CaseFeatures", "case_features", "RULES_VERSION"]

RULES_VERSION = "guideline rules v1"

# Thresholds (one place; the card's table mirrors them).
LARGE_DIAMETER_MM = 50.0  # largest lesion >= 5 cm: "large" (platinum combination, permanent embolic, beads)
SMALL_DIAMETER_MM = 30.0  # largest lesion < 3 cm and few lesions: "small"
LARGE_TOTAL_ML = 65.0  # total tumour volume of about one 5 cm sphere
LARGE_LIVER_FRACTION = 0.10  # tumour >= 10 % of the liver volume
MANY_LESIONS = 4  # >= 4 lesions: multifocal, large burden
BILIRUBIN_ELEVATED = 34.0  # µmol/L (2 mg/dL)
BILIRUBIN_SEVERE = 51.0  # µmol/L (3 mg/dL)
ALBUMIN_LOW = 28.0  # g/L
AFP_HIGH = 400.0  # ng/mL

# Agents proposed by the rules (all names of the Action Base; checked on import by `Proposal`).
ANTHRACYCLINES = ("Epirubicin", "Doxorubicin")
PLATINUMS = ("Cisplatin", "Lobaplatin")
EXTRA_LARGE_BURDEN = ("Mitomycin",)
LIPIODOL, GELATIN, PVA, BEADS = "Lipiodol", "Gelatin Sponge", "PVA", "Drug-eluting Beads"


@dataclass(frozen=True)
class CaseFeatures:
    """What the rules read from a case. ``None`` = not known (no mask, or the covariate is missing)."""

    n_lesions: int | None
    largest_diameter_mm: float | None
    total_tumour_ml: float | None
    liver_fraction: float | None
    burden_source: str  # "tumour mask", "covariates" or "unknown"
    child_pugh: str | None
    child_pugh_score: int | None
    bilirubin: float | None
    albumin: float | None
    ecog: int | None
    vascular_invasion: bool | None
    bclc: str | None
    afp: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def has_covariates(self) -> bool:
        return any(v is not None for v in (self.child_pugh, self.bilirubin, self.albumin, self.ecog,
                                           self.vascular_invasion, self.bclc, self.afp))


def _number(value: Any, name: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError) as e:
        raise PolicyError(f"Covariate {name} = {value!r} is not a number.") from e
    if not low <= x <= high:
        raise PolicyError(f"Covariate {name} = {value!r} is outside the plausible range {low:g}..{high:g}; "
                          "check the case's clinical data (units: bilirubin µmol/L, albumin g/L, AFP ng/mL).")
    return x


def _child_pugh(letter: Any, score: Any) -> tuple[str | None, int | None]:
    """Class letter and score; the class is derived from the score when only the score is known."""
    s = _number(score, "child_pugh_score", 5, 15)
    s_int = None if s is None else int(round(s))
    if letter is None:
        if s_int is None:
            return None, None
        return ("A" if s_int <= 6 else "B" if s_int <= 9 else "C"), s_int
    cls = str(letter).strip().upper()
    if cls not in ("A", "B", "C"):
        raise PolicyError(f"Covariate child_pugh = {letter!r} is not a Child-Pugh class; use A, B or C.")
    return cls, s_int


def _flag(value: Any, name: str) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("1", "true", "yes", "y"):
            return True
        if v in ("0", "false", "no", "n"):
            return False
        raise PolicyError(f"Covariate {name} = {value!r} is not yes/no.")
    return bool(value)


def case_features(case: Case) -> CaseFeatures:
    """Tumour burden (from the mask when present) and the covariates the rules use, with their ranges checked."""
    from pipelines.caseio.summary import case_summary

    cov = case.covariates
    n = largest = total = fraction = None
    source = "unknown"
    if case.has_tumour_mask:
        summary = case_summary(case)
        if summary.lesions:
            n = len(summary.lesions)
            largest = max(les.max_axial_diameter_mm for les in summary.lesions)
            total = float(summary.tumour_volume_ml or 0.0)
            if summary.liver_volume_ml:
                fraction = total / summary.liver_volume_ml
            source = "tumour mask"
    if source == "unknown" and (cov.n_lesions is not None or cov.max_diameter_mm is not None):
        n = None if cov.n_lesions is None else int(_number(cov.n_lesions, "n_lesions", 0, 1000))
        largest = _number(cov.max_diameter_mm, "max_diameter_mm", 0, 500)
        source = "covariates"
    cp, cp_score = _child_pugh(cov.child_pugh, cov.child_pugh_score)
    ecog = _number(cov.ecog, "ecog", 0, 4)
    return CaseFeatures(
        n_lesions=n, largest_diameter_mm=None if largest is None else round(float(largest), 1),
        total_tumour_ml=None if total is None else round(total, 2),
        liver_fraction=None if fraction is None else round(fraction, 4), burden_source=source,
        child_pugh=cp, child_pugh_score=cp_score,
        bilirubin=_number(cov.bilirubin, "bilirubin", 0, 1000), albumin=_number(cov.albumin, "albumin", 5, 80),
        ecog=None if ecog is None else int(ecog), vascular_invasion=_flag(cov.vascular_invasion, "vascular_invasion"),
        bclc=None if cov.bclc is None else str(cov.bclc).strip().upper(), afp=_number(cov.afp, "afp", 0, 1e7),
    )


# ------------------------------------------------------------------------------------------------ the rules
def _liver_reserve(f: CaseFeatures) -> tuple[str, str]:
    """("good" | "reduced" | "poor" | "unknown", the reason in words)."""
    bits = []
    if f.child_pugh:
        bits.append(f"Child-Pugh {f.child_pugh}{f.child_pugh_score or ''}")
    if f.bilirubin is not None:
        bits.append(f"bilirubin {f.bilirubin:g} µmol/L")
    if f.albumin is not None:
        bits.append(f"albumin {f.albumin:g} g/L")
    seen = ", ".join(bits)
    if f.child_pugh == "C" or (f.bilirubin is not None and f.bilirubin > BILIRUBIN_SEVERE):
        return "poor", seen
    if (f.child_pugh == "B" or (f.bilirubin is not None and f.bilirubin > BILIRUBIN_ELEVATED)
            or (f.albumin is not None and f.albumin < ALBUMIN_LOW)):
        return "reduced", seen
    if f.child_pugh == "A":
        return "good", seen
    return "unknown", seen or "no Child-Pugh class, bilirubin or albumin"


def _burden(f: CaseFeatures) -> str:
    """"large" | "small" | "intermediate" | "unknown"."""
    if f.burden_source == "unknown":
        return "unknown"
    large = ((f.largest_diameter_mm or 0) >= LARGE_DIAMETER_MM or (f.n_lesions or 0) >= MANY_LESIONS
             or (f.total_tumour_ml or 0) >= LARGE_TOTAL_ML or (f.liver_fraction or 0) >= LARGE_LIVER_FRACTION)
    if large:
        return "large"
    if f.largest_diameter_mm is not None and f.largest_diameter_mm < SMALL_DIAMETER_MM and (f.n_lesions or 1) <= 3:
        return "small"
    return "intermediate"


def _findings(f: CaseFeatures) -> str:
    if f.burden_source == "unknown":
        burden = "tumour burden unknown (no tumour mask and no size covariates)"
    else:
        parts = []
        if f.n_lesions is not None:
            parts.append(f"{f.n_lesions} lesion{'s' if f.n_lesions != 1 else ''}")
        if f.largest_diameter_mm is not None:
            parts.append(f"largest {f.largest_diameter_mm:g} mm")
        if f.total_tumour_ml is not None:
            parts.append(f"total {f.total_tumour_ml:g} ml")
        if f.liver_fraction is not None:
            parts.append(f"{100 * f.liver_fraction:.1f}% of the liver")
        burden = ", ".join(parts) + f" (from the {f.burden_source})"
    clinical = []
    if f.ecog is not None:
        clinical.append(f"ECOG {f.ecog}")
    if f.vascular_invasion is not None:
        clinical.append("vascular invasion" if f.vascular_invasion else "no vascular invasion")
    if f.bclc:
        clinical.append(f"BCLC {f.bclc}")
    if f.afp is not None:
        clinical.append(f"AFP {f.afp:g} ng/mL")
    return burden + ("; " + ", ".join(clinical) if clinical else "")


class GuidelinePolicy:
    """Deterministic rules (module docstring); ``propose(case)`` always returns the same `Proposal` for a case."""

    name = "guideline"

    def propose(self, case: Case) -> Proposal:
        """Apply the rules G0-G10 to ``case`` (see ``models/cards/policy_guideline.md``)."""
        f = case_features(case)
        reserve, reserve_seen = _liver_reserve(f)
        burden = _burden(f)
        fired: list[str] = []

        def fire(rule: str, text: str) -> None:
            fired.append(f"{rule} {text}")

        if not f.has_covariates:
            fire("G0", "no clinical covariates: liver function, performance status and vascular invasion are "
                       "unknown, so these rules use imaging only and stay conservative (no platinum combination).")
        if f.burden_source == "unknown":
            fire("G0", "no tumour mask and no size covariates: tumour burden is unknown; size rules do not apply.")

        protocols: list[Protocol]
        drugs: list[str] = []
        embolics: list[str] = []
        preferred: tuple[list[str], Protocol]

        too_frail = f.ecog is not None and f.ecog >= 3
        if reserve == "poor" or too_frail:
            why = (f"liver reserve poor ({reserve_seen})" if reserve == "poor" else f"ECOG {f.ecog}")
            fire("G1", f"{why}: chemo-embolisation is generally contraindicated (BCLC D territory); only bland "
                       "embolisation with a temporary agent is proposed, and the team should weigh best supportive "
                       "or systemic care instead.")
            protocols, embolics = [Protocol.BLAND], [GELATIN]
            preferred = ([GELATIN], Protocol.BLAND)
        else:
            frail = f.ecog == 2
            if reserve == "reduced" or frail:
                why = f"liver reserve reduced ({reserve_seen})" if reserve == "reduced" else "ECOG 2"
                fire("G2", f"{why}: one anthracycline only (no combination), at a reduced dose; DEB-TACE (lower "
                           "systemic drug exposure) and bland embolisation allowed beside cTACE; no permanent PVA.")
                protocols = [Protocol.CTACE, Protocol.DEB_TACE, Protocol.BLAND]
                drugs = list(ANTHRACYCLINES)
                embolics = [LIPIODOL, GELATIN, BEADS]
                preferred = (["Doxorubicin", BEADS], Protocol.DEB_TACE)
            else:
                if reserve == "good":
                    fire("G3", f"liver reserve good ({reserve_seen}): conventional TACE with an anthracycline "
                               "(Epirubicin or Doxorubicin) in a Lipiodol emulsion followed by Gelatin Sponge.")
                else:
                    fire("G3", f"liver reserve unknown ({reserve_seen}): conventional TACE with one anthracycline; "
                               "no platinum combination until liver function is known.")
                protocols = [Protocol.CTACE]
                drugs = list(ANTHRACYCLINES)
                embolics = [LIPIODOL, GELATIN]
                preferred = (["Epirubicin", LIPIODOL, GELATIN], Protocol.CTACE)
                strong = reserve == "good" and (f.ecog is None or f.ecog <= 1)
                if burden == "large" and strong:
                    fire("G4", "large burden with good liver reserve: a platinum agent (Cisplatin or Lobaplatin) "
                               "may be added to the anthracycline, and Mitomycin (cisplatin-doxorubicin-mitomycin "
                               "regimen) is proposed.")
                    drugs += [*PLATINUMS, *EXTRA_LARGE_BURDEN]
                    preferred = (["Cisplatin", "Epirubicin", LIPIODOL, GELATIN], Protocol.CTACE)
                elif f.afp is not None and f.afp > AFP_HIGH and strong:
                    fire("G5", f"AFP {f.afp:g} ng/mL > {AFP_HIGH:g} (aggressive biology) with good liver reserve: "
                               "a platinum agent may be added to the anthracycline.")
                    drugs += list(PLATINUMS)
                if burden == "large" or (burden == "intermediate" and (f.n_lesions or 0) >= 2):
                    fire("G6", "large or multifocal burden: DEB-TACE (Doxorubicin-loaded beads) allowed beside cTACE "
                               "for calibrated delivery to several or large lesions.")
                    protocols.append(Protocol.DEB_TACE)
                    embolics.append(BEADS)
                if burden == "large" and reserve == "good":
                    fire("G7", "large burden with good liver reserve: permanent PVA particles allowed as the "
                               "particulate after the emulsion.")
                    embolics.append(PVA)
            if burden == "small":
                fire("G8", f"small burden (largest < {SMALL_DIAMETER_MM:g} mm, at most 3 lesions): TACE is usually "
                           "second to ablation or resection at this size (BCLC 0/A); no drug combination is proposed "
                           "for this reason alone.")
        if f.vascular_invasion:
            fire("G9", "vascular invasion: a relative contraindication to TACE (systemic therapy is standard, BCLC "
                       "C); only temporary embolics are proposed (no PVA, no drug-eluting beads).")
            embolics = [e for e in embolics if e not in (PVA, BEADS)]
            if Protocol.DEB_TACE in protocols:
                protocols.remove(Protocol.DEB_TACE)
            if BEADS in preferred[0]:
                preferred = (["Epirubicin", LIPIODOL, GELATIN], Protocol.CTACE)
        if f.bclc in ("C", "D") and not any(r.startswith(("G1", "G9")) for r in fired):
            fire("G10", f"BCLC {f.bclc}: TACE is outside the usual indication at this stage; the proposal is a "
                       "research comparison, not a treatment recommendation.")

        plan = Plan.from_agents(preferred[0], protocol=preferred[1])
        text = self._rationale(f, fired, protocols, drugs, embolics, plan)
        return Proposal(drugs=tuple(drugs), embolics=tuple(embolics), protocols=tuple(protocols), preferred=plan,
                        rationale=text, backend=self.name, model=RULES_VERSION,
                        details={"features": f.to_dict(), "liver_reserve": reserve, "burden": burden,
                                 "rules_fired": [r.split(" ", 1)[0] for r in fired]})

    @staticmethod
    def _rationale(f: CaseFeatures, fired: list[str], protocols: list[Protocol], drugs: list[str],
                   embolics: list[str], plan: Plan) -> str:
        lines = [
            f"{RULES_VERSION}: a deterministic rule set written from general TACE practice; not learned, not "
            "validated. Research use only, not for clinical use.",
            f"Findings: {_findings(f)}.",
            "Rules that fired:",
            *[f"- {r}" for r in fired],
            f"Proposed: protocols {', '.join(p.value for p in protocols)}; drugs {', '.join(drugs) or 'none'}; "
            f"embolics {', '.join(embolics)}.",
            f"Preferred plan: {plan.canonical()} ({plan.protocol.value}).",
        ]
        return "\n".join(lines)
