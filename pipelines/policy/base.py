"""`Proposal`, `PolicyBackend` and `load_policy`: who proposes the agents a plan search may combine.

A policy looks at one case and proposes sets of agents (drugs, embolics) and the protocols it allows; the plan
search then scores the admissible combinations (`Proposal.candidate_plans`). Every backend returns the same
validated `Proposal`, or raises a `PolicyError`: a proposal is never empty, so a failed model call can never turn
into a silent ``["Lipiodol"]`` plan as in the reference code.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from models.action_base import default_action_base
from models.errors import ConfigError, PlanValidationError, PolicyError
from models.plan import Plan, Protocol, enumerate_plans

if typing.TYPE_CHECKING:
    from pipelines.case import Case
    from pipelines.config import Config, PolicyConfig

__all__ = ["Proposal", "PolicyBackend", "load_policy", "BACKENDS"]

BACKENDS: tuple[str, ...] = ("guideline", "openai", "hf")


@lru_cache(maxsize=32)
def _admissible(max_drugs: int, max_embolics: int, protocols: tuple[Protocol, ...]) -> tuple[Plan, ...]:
    """All admissible plans of the packaged Action Base for these horizons and protocols (cached: 0.1 s each)."""
    return tuple(enumerate_plans(max_drugs=max_drugs, max_embolics=max_embolics, protocols=protocols))


@dataclass(frozen=True)
class Proposal:
    """What a policy proposes for one case. Construction validates and canonicalises every field.

    Attributes:
        drugs: canonical Action Base drug names (aliases are resolved; table order; may be empty for bland only).
        embolics: canonical embolic names (at least one).
        protocols: the protocols the policy allows (at least one), in `Protocol` order.
        preferred: the single plan this policy would give on its own (a planning baseline), or None. It must use
            only the proposed agents and an allowed protocol.
        rationale: why, in words (shown in the UI and reports).
        backend: ``"guideline"``, ``"openai"`` or ``"hf"``.
        model: ``"guideline rules v1"``, the served model name, or the checkpoint directory.
        raw_reply: the model's raw text (audit); None for the rule set.
        attempts: how many replies were requested before this one was valid.
    """

    drugs: tuple[str, ...]
    embolics: tuple[str, ...]
    protocols: tuple[Protocol, ...]
    preferred: Plan | None
    rationale: str
    backend: str
    model: str
    raw_reply: str | None = None
    attempts: int = 1
    details: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        ab = default_action_base()
        drugs = _canonical_set(self.drugs, "drug", "drugs")
        embolics = _canonical_set(self.embolics, "embolic", "embolics")
        if not embolics:
            raise PolicyError("A proposal needs at least one embolic agent (rule R5); the policy proposed none.")
        protocols = sorted({Protocol.from_name(p) for p in self.protocols}, key=list(Protocol).index)
        if not protocols:
            raise PolicyError("A proposal needs at least one protocol (cTACE, DEB-TACE or bland); it has none.")
        if not str(self.rationale).strip():
            raise PolicyError("A proposal needs a rationale; the policy gave an empty one.")
        if self.preferred is not None:
            outside = [a for a in self.preferred.agents if a not in drugs and a not in embolics]
            if outside:
                raise PolicyError(f"The preferred plan {self.preferred} uses {', '.join(outside)}, which the proposal "
                                  "does not propose; propose it or choose another plan.")
            if self.preferred.protocol not in protocols:
                raise PolicyError(f"The preferred plan {self.preferred} is {self.preferred.protocol.value}, a protocol "
                                  f"the proposal does not allow ({', '.join(p.value for p in protocols)}).")
        object.__setattr__(self, "drugs", tuple(sorted(drugs, key=ab.order)))
        object.__setattr__(self, "embolics", tuple(sorted(embolics, key=ab.order)))
        object.__setattr__(self, "protocols", tuple(protocols))
        object.__setattr__(self, "attempts", int(self.attempts))

    # -------------------------------------------------------------------------------------------- plans
    def candidate_plans(self, max_drugs: int = 2, max_embolics: int = 2) -> list[Plan]:
        """The admissible plans built from the proposed agents and protocols, deterministic order.

        `models.plan.enumerate_plans` (protocol order, then drug sets by size and table order, then embolic sets)
        restricted to plans whose agents were all proposed.

        Raises:
            PolicyError: no admissible plan can be built (e.g. only DEB-TACE allowed but no anthracycline proposed).
        """
        if max_drugs < 0 or max_embolics < 1:
            raise PlanValidationError(f"candidate_plans needs max_drugs >= 0 and max_embolics >= 1; got {max_drugs} "
                                      f"and {max_embolics}.", rule="horizon")
        allowed = set(self.drugs) | set(self.embolics)
        plans = [p for p in _admissible(int(max_drugs), int(max_embolics), self.protocols) if set(p.agents) <= allowed]
        if not plans:
            raise PolicyError(
                f"No admissible plan can be built from the proposal (drugs: {', '.join(self.drugs) or 'none'}; "
                f"embolics: {', '.join(self.embolics)}; protocols: {', '.join(p.value for p in self.protocols)}) "
                f"with at most {max_drugs} drugs and {max_embolics} embolics. Check the protocols' required agents "
                "(cTACE: Lipiodol and a drug; DEB-TACE: drug-eluting beads and an anthracycline; bland: no drugs).")
        return plans

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (what reports and `mewm policy propose --json` print)."""
        return {
            "backend": self.backend,
            "model": self.model,
            "drugs": list(self.drugs),
            "embolics": list(self.embolics),
            "protocols": [p.value for p in self.protocols],
            "preferred": None if self.preferred is None else self.preferred.to_dict(),
            "preferred_text": None if self.preferred is None else self.preferred.canonical(),
            "rationale": self.rationale,
            "raw_reply": self.raw_reply,
            "attempts": self.attempts,
            "details": self.details,
        }


def _canonical_set(names: typing.Iterable[str], kind: str, what: str) -> list[str]:
    """Canonical names (aliases resolved, duplicates merged) that must all be of ``kind``."""
    ab = default_action_base()
    if isinstance(names, str):
        raise PolicyError(f"Proposal {what} must be a list of names, got the string {names!r}.")
    out: list[str] = []
    for name in names:
        agent = ab.agent(name)  # UnknownAgentError names the closest agents
        if agent.kind != kind:
            raise PolicyError(f"{agent.name} is listed under the {what} but is {_a(agent.kind)}; list it under "
                              f"the {agent.kind}s.")
        if agent.name not in out:
            out.append(agent.name)
    return out


def _a(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


class PolicyBackend(typing.Protocol):
    """A policy: ``propose(case)`` returns a validated `Proposal` or raises a `PolicyError`."""

    name: str

    def propose(self, case: "Case") -> Proposal: ...


def load_policy(config: "PolicyConfig | Config | None" = None) -> PolicyBackend:
    """The policy backend named by ``[policy] backend`` (``guideline`` when no config is given).

    Backends that need a server or a checkpoint check their settings here (a clear `ConfigError` or
    `CheckpointNotFoundError`), not at the first proposal.
    """
    from pipelines.config import Config, PolicyConfig, load_config

    if config is None:
        cfg = load_config().policy
    elif isinstance(config, Config):
        cfg = config.policy
    elif isinstance(config, PolicyConfig):
        cfg = config
    else:
        raise ConfigError(f"load_policy expects a PolicyConfig or Config, got {type(config).__name__}.")
    backend = str(cfg.backend).strip().lower()
    if backend == "guideline":
        from pipelines.policy.guideline import GuidelinePolicy

        return GuidelinePolicy()
    if backend == "openai":
        from pipelines.policy.openai_backend import OpenAIPolicy

        return OpenAIPolicy.from_config(cfg)
    if backend == "hf":
        from pipelines.policy.hf_backend import HFPolicy

        return HFPolicy.from_config(cfg)
    raise ConfigError(f"Unknown policy backend {cfg.backend!r} in [policy] backend; choose one of "
                      f"{', '.join(BACKENDS)}.")
