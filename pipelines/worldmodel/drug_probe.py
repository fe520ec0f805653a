"""The plans of the drug probe (`pipelines.worldmodel.drug_response`): the same embolics with each drug class.

Kept apart from the evaluation (no torch import) so that the command line can show the defaults in ``--help``.
"""

from __future__ import annotations

from models.errors import ConfigError
from models.plan import Plan

__all__ = ["PROBE_DRUGS", "PROBE_EMBOLICS", "probe_plans"]

# One agent per drug class of the simulator (`pipelines.cohort.response.DRUG_EFFECTS`).
PROBE_DRUGS = ("Raltitrexed", "Cisplatin", "Epirubicin", "Mitomycin", "Hydroxycamptothecin")
PROBE_EMBOLICS = ("Lipiodol", "Gelatin Sponge")


def probe_plans(drugs: tuple[str, ...] = PROBE_DRUGS, embolics: tuple[str, ...] = PROBE_EMBOLICS) -> list[Plan]:
    """The embolics without a drug first, then each drug with the same embolics (validated plans, protocol
    inferred; typical doses left unset).

    Raises:
        ConfigError: fewer than two drugs, or no embolics. UnknownAgentError / PlanValidationError: an agent the
            Action Base does not know, or a combination its rules forbid.
    """
    if len(drugs) < 2 or not embolics:
        raise ConfigError(f"The drug probe needs at least two drugs and one embolic agent, got drugs={list(drugs)}, "
                          f"embolics={list(embolics)}.")
    return [Plan.from_agents(list(embolics))] + [Plan.from_agents([d, *embolics]) for d in drugs]
