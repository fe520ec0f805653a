"""The cohort's plan space: a documented practice catalogue of TACE regimens.

Thirty-two plans drawn from the admissible plans of the Action Base (`models.plan.enumerate_plans` with up to two
drugs and two embolics), plus the three-drug HCC-TACE-Seg cTACE regimen (cisplatin + doxorubicin + mitomycin), so
that a few hundred virtual patients see every plan in their observational assignment. It covers every agent of the
Action Base and all three protocols. The oracle scores every plan of this space per patient;
`pipelines.cohort.oracle.expected_survival` works for any other valid plan too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["PRACTICE_CATALOGUE", "cohort_plan_space", "write_plan_space", "read_plan_space"]

# (agents, protocol) in the Action Base's canonical names; order here is the plan index used in files.
PRACTICE_CATALOGUE: tuple[tuple[tuple[str, ...], str], ...] = (
    # conventional TACE (Lipiodol emulsion)
    (("Raltitrexed", "Lobaplatin", "Lipiodol", "Gelatin Sponge"), "cTACE"),
    (("Raltitrexed", "Epirubicin", "Lipiodol", "Gelatin Sponge"), "cTACE"),
    (("Raltitrexed", "Oxaliplatin", "Lipiodol"), "cTACE"),
    (("Raltitrexed", "Lipiodol", "Gelatin Sponge"), "cTACE"),
    (("Raltitrexed", "Lipiodol", "PVA"), "cTACE"),
    (("Raltitrexed", "Lipiodol", "Absolute Alcohol"), "cTACE"),
    (("Lobaplatin", "Epirubicin", "Lipiodol", "Gelatin Sponge"), "cTACE"),
    (("Lobaplatin", "Lipiodol", "PVA"), "cTACE"),
    (("Lobaplatin", "Lipiodol", "NBCA"), "cTACE"),
    (("Oxaliplatin", "Epirubicin", "Lipiodol"), "cTACE"),
    (("Oxaliplatin", "Lipiodol", "Gelatin Sponge"), "cTACE"),
    (("Nedaplatin", "Pirarubicin", "Lipiodol", "Gelatin Sponge"), "cTACE"),
    (("Cisplatin", "Doxorubicin", "Mitomycin", "Lipiodol"), "cTACE"),  # HCC-TACE-Seg regimen
    (("Cisplatin", "Lipiodol", "Gelatin Sponge"), "cTACE"),
    (("Epirubicin", "Lipiodol"), "cTACE"),
    (("Epirubicin", "Lipiodol", "Gelatin Sponge"), "cTACE"),
    (("Epirubicin", "Lipiodol", "PVA"), "cTACE"),
    (("Idarubicin", "Lipiodol", "Gelatin Sponge"), "cTACE"),
    (("Doxorubicin", "Lipiodol", "Gelatin Sponge"), "cTACE"),
    (("Pirarubicin", "Hydroxycamptothecin", "Lipiodol"), "cTACE"),
    (("Hydroxycamptothecin", "Lipiodol", "Gelatin Sponge"), "cTACE"),
    (("Mitomycin", "Lipiodol", "Gelatin Sponge"), "cTACE"),
    (("Mitomycin", "Epirubicin", "Lipiodol"), "cTACE"),
    (("Epirubicin", "Lipiodol", "Absolute Alcohol"), "cTACE"),
    # drug-eluting bead TACE
    (("Doxorubicin", "Drug-eluting Beads"), "DEB-TACE"),  # HCC-TACE-Seg regimen
    (("Epirubicin", "Drug-eluting Beads"), "DEB-TACE"),
    (("Idarubicin", "Drug-eluting Beads"), "DEB-TACE"),
    (("Raltitrexed", "Epirubicin", "Drug-eluting Beads"), "DEB-TACE"),
    # bland embolisation
    (("Gelatin Sponge",), "bland"),
    (("PVA",), "bland"),
    (("Lipiodol", "Gelatin Sponge"), "bland"),
    (("Gelatin Sponge", "NBCA"), "bland"),
)


def cohort_plan_space() -> list[Any]:
    """The catalogue as validated `models.plan.Plan` objects (typical doses left unset)."""
    from models.plan import Plan

    return [Plan.from_agents(list(agents), protocol=protocol) for agents, protocol in PRACTICE_CATALOGUE]


def write_plan_space(plans: list[Any], path: str | Path) -> Path:
    """Write ``plan_space.json``: index, canonical text and the plan's dict, in catalogue order."""
    path = Path(path)
    rows = [{"index": i, "plan": p.canonical(), "key": p.key(), "definition": p.to_dict()} for i, p in enumerate(plans)]
    path.write_text(json.dumps({"n_plans": len(rows), "plans": rows}, indent=2, sort_keys=True) + "\n")
    return path


def read_plan_space(path: str | Path) -> list[Any]:
    """Read the plans of a cohort's ``plan_space.json`` (a path to the file or to the cohort folder)."""
    from models.errors import ManifestError
    from models.plan import Plan

    path = Path(path)
    if path.is_dir():
        path = path / "plan_space.json"
    try:
        data = json.loads(path.read_text())
        return [Plan.from_dict(r["definition"]) for r in data["plans"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ManifestError(f"Cannot read the plan space {path}: {e}. Regenerate the cohort with "
                            "`mewm cohort generate`.") from e
