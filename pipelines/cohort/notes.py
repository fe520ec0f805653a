"""Procedure notes in the style of the reference TACE reports, with doses inside the Action Base's ranges.

Clauses are ``;``-separated, one agent's dose per phrase, so `models.plan.Plan.parse` reads the note back to the same
agents and doses. About a quarter of agent mentions use an alias or brand name from the Action Base.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.action_base import default_action_base

__all__ = ["sample_doses", "procedure_note", "ALIAS_PROBABILITY"]

ALIAS_PROBABILITY = 0.25
_OPENINGS = (
    "Under DSA guidance the right femoral artery was punctured and a catheter was advanced into the proper hepatic "
    "artery",
    "Selective hepatic angiography showed tumor staining in the liver, and a microcatheter was placed in the "
    "tumor-feeding branches",
    "Celiac and superior mesenteric angiography were performed; superselective catheterization of the feeding "
    "arteries was achieved",
)
_CLOSINGS = (
    "tumor-feeding arteries were occluded on the final angiography.",
    "final angiography showed stasis of flow in the tumor-feeding arteries.",
    "the tumor staining disappeared on the final angiography.",
)


def _step(agent) -> float:
    if agent.unit == "vial":
        return 1.0
    if agent.unit == "ml":
        return 1.0 if agent.dose_max >= 10 else 0.5
    return 1.0 if agent.dose_max <= 10 else 5.0


def sample_doses(plan: Any, rng: np.random.Generator) -> dict[str, float]:
    """A dose for every agent of ``plan`` that records one, uniform in the Action Base range, rounded to a usual step."""
    ab = default_action_base()
    doses: dict[str, float] = {}
    for name in plan.agents:
        a = ab.agent(name)
        if a.dose_min is None or a.dose_max is None:
            continue
        step = _step(a)
        lo, hi = np.ceil(a.dose_min / step), np.floor(a.dose_max / step)
        doses[name] = float(rng.integers(int(lo), int(hi) + 1) * step)
    return doses


def _mention(name: str, rng: np.random.Generator) -> str:
    aliases = [al for al in default_action_base().agent(name).aliases if len(al) > 3]
    if aliases and rng.random() < ALIAS_PROBABILITY:
        return str(aliases[int(rng.integers(len(aliases)))])
    return name


def _fmt(value: float, unit: str) -> str:
    return f"{value:g} {unit}{'s' if unit == 'vial' and value != 1 else ''}"


def procedure_note(plan: Any, doses: dict[str, float], rng: np.random.Generator) -> str:
    """A free-text note describing ``plan`` administered at ``doses`` (agent → value in the agent's unit)."""
    ab = default_action_base()
    drugs, embolics = list(plan.drugs), list(plan.embolics)
    unit = {n: ab.agent(n).unit for n in plan.agents}

    def dose(n: str) -> str:
        return _fmt(doses[n], unit[n]) if n in doses else ""

    beads = next((e for e in embolics if ab.agent(e).cls == "drug-eluting beads"), None)
    loaded = next((d for d in drugs if ab.agent(d).cls == "anthracycline"), None) if beads else None
    emulsified: list[str] = []
    infused: list[str] = []
    for d in drugs:
        if d == loaded:
            continue
        (emulsified if "Lipiodol" in embolics and (d != drugs[0] or rng.random() < 0.5) else infused).append(d)
    clauses = [str(_OPENINGS[int(rng.integers(len(_OPENINGS)))])]
    for d in infused:
        form = int(rng.integers(2))
        clauses.append(f"{_mention(d, rng)} {dose(d)} was infused slowly" if form == 0 else
                       f"{dose(d)} {_mention(d, rng)} was perfused through the catheter")
    if "Lipiodol" in embolics:
        lip = f"{dose('Lipiodol')} {_mention('Lipiodol', rng)}"
        if emulsified:
            drugs_txt = " and ".join(f"{dose(d)} {_mention(d, rng)}" for d in emulsified)
            clauses.append(f"{lip} and {drugs_txt} were mixed into an emulsion and injected" if rng.random() < 0.5
                           else f"an emulsion of {lip} with {drugs_txt} was slowly injected")
        else:
            clauses.append(f"{lip} was injected into the tumor-feeding arteries")
    if beads:
        clauses.append(f"{dose(beads)} of {_mention(beads, rng)} (100-300 µm) loaded with {dose(loaded)} "
                       f"{_mention(loaded, rng)} was delivered")
    for e in embolics:
        if e in ("Lipiodol", beads):
            continue
        if e == "Gelatin Sponge":
            clauses.append(f"{_mention(e, rng)} particles (350-560 µm) were used to embolize the feeding arteries")
        elif e == "PVA":
            clauses.append(f"{_mention(e, rng)} (300-500 µm) was used for embolization")
        else:
            clauses.append(f"{dose(e)} {_mention(e, rng)} was injected for embolization")
    clauses.append(str(_CLOSINGS[int(rng.integers(len(_CLOSINGS)))]))
    text = "; ".join(c.strip() for c in clauses)
    return text[0].upper() + text[1:]
