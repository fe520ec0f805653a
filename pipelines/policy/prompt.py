"""The prompt and the JSON schema shared by the vision-language policies (``openai``, ``hf``).

Both backends send the same system message, the same case text (`case_text`, built from
`pipelines.caseio.summary.case_summary` and the covariates; never the administered plan, its note or the outcome,
which would leak the answer), the same three views (`pipelines.policy.render.render_views`) and the same JSON
schema (`proposal_schema`, enums from the Action Base table, never a hard-coded agent list). On an invalid reply
they add `retry_text` with what was wrong.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from models.action_base import ActionBase, default_action_base
from models.plan import Protocol
from pipelines.case import Case

__all__ = ["SYSTEM_PROMPT", "SCHEMA_NAME", "proposal_schema", "case_text", "action_base_text", "user_text",
           "retry_text", "REPLY_KEYS"]

SCHEMA_NAME = "tace_proposal"
REPLY_KEYS = ("drug_set", "embolic_set", "protocols", "preferred_plan", "rationale")

SYSTEM_PROMPT = (
    "You are an interventional radiology assistant in a research tool (MeWM Workbench; research use only, not for "
    "clinical use). For one hepatocellular carcinoma case you propose candidate agents for trans-arterial "
    "chemo-embolisation (TACE): the drugs and embolic agents a plan search may combine, the protocols it may use "
    "(cTACE, DEB-TACE, bland), and the single plan you would choose. Use only agents of the Action Base given by the "
    "user, respect its rules, and answer with one JSON object that follows the schema, nothing else."
)


def proposal_schema(action_base: ActionBase | None = None) -> dict[str, Any]:
    """The reply's JSON schema (OpenAI structured-output compatible: every key required, no extra keys)."""
    ab = action_base or default_action_base()
    drugs = [a.name for a in ab.drugs]
    embolics = [a.name for a in ab.embolics]
    protocols = [p.value for p in Protocol]
    return {
        "type": "object",
        "properties": {
            "drug_set": {"type": "array", "items": {"type": "string", "enum": drugs},
                         "description": "drugs the search may use (may be empty for bland embolisation only)"},
            "embolic_set": {"type": "array", "items": {"type": "string", "enum": embolics}, "minItems": 1,
                            "description": "embolic agents the search may use (at least one)"},
            "protocols": {"type": "array", "items": {"type": "string", "enum": protocols}, "minItems": 1,
                          "description": "protocols the search may use"},
            "preferred_plan": {
                "type": "object",
                "properties": {
                    "agents": {"type": "array", "items": {"type": "string", "enum": drugs + embolics},
                               "minItems": 1},
                    "protocol": {"type": "string", "enum": protocols},
                },
                "required": ["agents", "protocol"],
                "additionalProperties": False,
                "description": "the one plan you would choose, built from drug_set and embolic_set",
            },
            "rationale": {"type": "string", "description": "why, in a few sentences"},
        },
        "required": list(REPLY_KEYS),
        "additionalProperties": False,
    }


@lru_cache(maxsize=4)
def _action_base_text(ab: ActionBase) -> str:
    lines = ["Action Base (use these canonical names):"]
    for kind, agents in (("Drugs", ab.drugs), ("Embolic agents", ab.embolics)):
        lines.append(f"{kind}:")
        lines += [f"- {a.name} ({a.cls}{'; also called ' + ', '.join(a.aliases[:3]) if a.aliases else ''})"
                  for a in agents]
    lines.append("Rules (a plan breaking one is invalid):")
    for cr in ab.class_rules:
        lines.append(f"- {cr.id}: {cr.label}: at most {cr.max} {cr.cls} agent(s) "
                     f"({', '.join(ab.classes.get(cr.cls, ()))}).")
    pairs = "; ".join(" with ".join(sorted(p, key=ab.order)) for p in ab.conflicts)
    lines.append(f"- {ab.conflict_rule[0]}: {ab.conflict_rule[1]}: never combine {pairs}.")
    lines.append(f"- {ab.min_embolics[0]}: {ab.min_embolics[1]}.")
    for name, spec in ab.protocols.items():
        lines.append(f"- {spec.id} protocol {name} ({spec.label}): {spec.description}")
    lines.append(f"Plans in the search have at most {ab.max_drugs} drugs and {ab.max_embolics} embolic agents.")
    return "\n".join(lines)


def action_base_text(action_base: ActionBase | None = None) -> str:
    """The Action Base agents, classes, rules and protocols in words (read from the table)."""
    return _action_base_text(action_base or default_action_base())


def _fmt(value: Any, unit: str = "") -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}{unit}"
    return f"{value}{unit}"


_COVARIATES = (("age", "age", " years"), ("sex", "sex", ""), ("hbv", "hepatitis B", ""),
               ("child_pugh", "Child-Pugh class", ""), ("child_pugh_score", "Child-Pugh score", ""),
               ("bilirubin", "bilirubin", " µmol/L"), ("albumin", "albumin", " g/L"), ("afp", "AFP", " ng/mL"),
               ("ecog", "ECOG", ""), ("vascular_invasion", "vascular invasion", ""), ("bclc", "BCLC stage", ""),
               ("n_lesions", "lesions (clinical record)", ""), ("max_diameter_mm", "max diameter (clinical record)",
                                                                  " mm"))


def case_text(case: Case) -> str:
    """The clinical summary sent with the images: imaging measurements and covariates, nothing about treatment."""
    from pipelines.caseio.summary import case_summary

    s = case_summary(case)
    lines = [f"Case {s.case_id}: CT {s.shape[0]}x{s.shape[1]}x{s.shape[2]} voxels, spacing "
             f"{' x '.join(f'{v:g}' for v in s.spacing_mm)} mm."]
    if not s.has_labels:
        lines.append("No liver or tumour mask: tumour burden is not measured; the views are central slices.")
    else:
        lines.append(f"Liver volume {s.liver_volume_ml:g} ml; {s.n_tumours} lesion(s), total tumour volume "
                     f"{s.tumour_volume_ml:g} ml (viable tumour, necrosis and Lipiodol).")
        for les in s.lesions:
            lines.append(f"- lesion {les.index}: {les.volume_ml:g} ml, max axial diameter "
                         f"{les.max_axial_diameter_mm:g} mm, centre (RAS mm) "
                         f"{', '.join(f'{c:g}' for c in les.centroid_ras_mm)}")
    cov = case.covariates.to_dict()
    known = [f"{label} {_fmt(cov[key], unit)}" for key, label, unit in _COVARIATES if key in cov]
    lines.append("Clinical covariates: " + ("; ".join(known) + "." if known else "not available (imaging only)."))
    return "\n".join(lines)


def user_text(case: Case, action_base: ActionBase | None = None) -> str:
    """The user message's text: what the images are, the case, the Action Base and the answer format."""
    return "\n\n".join([
        "Images: axial, coronal and sagittal CT slices through the centre of the largest tumour, liver window "
        "(W350/L40), tumour outlined in yellow, orientation letters on the edges (R/L, A/P, S/I).",
        case_text(case),
        action_base_text(action_base),
        "Answer with one JSON object with exactly these keys: drug_set (list of drugs), embolic_set (list of "
        "embolic agents, at least one), protocols (list of cTACE / DEB-TACE / bland), preferred_plan ({\"agents\": "
        "[...], \"protocol\": ...}, using only agents of drug_set and embolic_set and one of protocols, obeying every "
        "rule), rationale (a few sentences).",
    ])


def retry_text(problems: list[str]) -> str:
    """The follow-up message after an invalid reply: each problem, then the instruction to answer again."""
    listed = "\n".join(f"- {p}" for p in problems)
    return (f"Your previous reply could not be used:\n{listed}\nReply again with only the corrected JSON object "
            "(keys drug_set, embolic_set, protocols, preferred_plan, rationale), using Action Base names and obeying "
            "the rules.")
