"""`Plan`: a validated TACE plan (agents of the Action Base, optional doses, a protocol).

A plan is a *set* of agents: order never matters. Its canonical text lists drugs first, then embolics, in the
Action Base's table order, with doses when known (``"Lobaplatin 50 mg; Epirubicin 30 mg; Lipiodol 10 ml"``), and
`Plan.parse` reads that text back, as well as keyword lists and free-text procedure notes.

Rules (data in ``models/data/action_base.json``, checked by `Plan.validate`):

- R1 at most one platinum agent (Cisplatin, Oxaliplatin, Lobaplatin, Nedaplatin);
- R2 at most one anthracycline (Doxorubicin, Epirubicin, Idarubicin, Pirarubicin = THP);
- R3 embolic conflicts (Absolute Alcohol x PVA, PVA x Gelatin Sponge);
- R4 protocol: cTACE needs Lipiodol and a drug; DEB-TACE needs drug-eluting beads with an anthracycline and no
  Lipiodol; bland embolisation has no drugs and no drug-eluting beads;
- R5 at least one embolic agent;
- doses: in the agent's unit, positive, and at most ``dose_plausible_factor`` (3) times the table's typical maximum.

The search horizons (at most 2 drugs and 2 embolics) limit `enumerate_plans` only: an administered regimen with
three drugs (cisplatin + doxorubicin + mitomycin) is a valid plan.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

from models.action_base import ActionBase, Agent, default_action_base, normalize_name
from models.errors import PlanValidationError

__all__ = ["Protocol", "Dose", "Plan", "infer_protocol", "enumerate_plans", "keyword_metrics"]


class Protocol(StrEnum):
    """TACE protocol (rule R4); the value is the display name."""

    CTACE = "cTACE"
    DEB_TACE = "DEB-TACE"
    BLAND = "bland"

    @classmethod
    def from_name(cls, name: "str | Protocol") -> "Protocol":
        """Case-insensitive lookup (``"ctace"``, ``"deb tace"``); unknown names raise with the valid ones."""
        if isinstance(name, Protocol):
            return name
        key = normalize_name(str(name))
        for p in cls:
            if normalize_name(p.value) == key:
                return p
        valid = ", ".join(repr(p.value) for p in cls)
        raise PlanValidationError(f"Unknown protocol {name!r}; choose one of {valid}.", rule="R4 protocol")


_UNIT_ALIASES = {"mg": "mg", "ml": "ml", "cc": "ml", "vial": "vial", "vials": "vial"}


@dataclass(frozen=True)
class Dose:
    """A dose: ``value`` (> 0, finite) in ``unit`` (``"mg"``, ``"ml"`` or ``"vial"``; ``mL``/``cc`` → ``ml``)."""

    value: float
    unit: str

    def __post_init__(self) -> None:
        unit = _UNIT_ALIASES.get(str(self.unit).strip().lower())
        if unit is None:
            raise PlanValidationError(f"Unknown dose unit {self.unit!r}; use mg, ml or vial.", rule="dose")
        try:
            value = float(self.value)
        except (TypeError, ValueError) as e:
            raise PlanValidationError(f"Dose value {self.value!r} is not a number.", rule="dose") from e
        if not math.isfinite(value) or value <= 0:
            raise PlanValidationError(f"Dose value must be a positive finite number, got {self.value!r}.", rule="dose")
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "unit", unit)

    @classmethod
    def coerce(cls, dose: "Dose | str | tuple | float | int", default_unit: str | None) -> "Dose":
        """A `Dose` from a `Dose`, ``"50 mg"``, ``(50, "mg")`` or a bare number in ``default_unit``."""
        if isinstance(dose, Dose):
            return dose
        if isinstance(dose, str):
            m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*", dose)
            if not m:
                raise PlanValidationError(f"Cannot read the dose {dose!r}; write e.g. '50 mg' or '10 ml'.", rule="dose")
            return cls(float(m.group(1)), m.group(2))
        if isinstance(dose, tuple) and len(dose) == 2:
            return cls(dose[0], dose[1])
        if isinstance(dose, (int, float)) and not isinstance(dose, bool):
            if default_unit is None:
                raise PlanValidationError(f"A bare dose {dose!r} needs a unit for this agent.", rule="dose")
            return cls(dose, default_unit)
        raise PlanValidationError(f"Cannot read the dose {dose!r}; give a Dose, '50 mg' or (50, 'mg').", rule="dose")

    def __str__(self) -> str:
        return f"{self.value:.10g} {self.unit}"


# ------------------------------------------------------------------------------------------------ rules
def _rule(rule_id: str, label: str) -> tuple[str, str]:
    """(rule attribute, message prefix): ``("R1 at most one platinum agent", "Rule 1 (at most one platinum agent)")``."""
    number = rule_id[1:] if rule_id.startswith("R") else rule_id
    return f"{rule_id} {label}", f"Rule {number} ({label})"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _join(names: Iterable[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def infer_protocol(agents: Iterable[str], action_base: ActionBase | None = None) -> Protocol:
    """The protocol implied by a set of agents.

    Drug-eluting beads → DEB-TACE; otherwise no drugs → bland; otherwise Lipiodol → cTACE. Drugs with neither Lipiodol
    nor beads imply no protocol and raise `PlanValidationError` (rule R4) saying what to add.
    """
    ab = action_base or default_action_base()
    resolved = [ab.agent(a) for a in agents]
    names = {a.name for a in resolved}
    deb, ctace = ab.protocols[Protocol.DEB_TACE.value], ab.protocols[Protocol.CTACE.value]
    if set(deb.requires_agents) <= names and deb.requires_agents:
        return Protocol.DEB_TACE
    if not any(a.is_drug for a in resolved):
        return Protocol.BLAND
    if set(ctace.requires_agents) <= names:
        return Protocol.CTACE
    rule, prefix = _rule(ctace.id, "protocol")
    plan = _join(sorted(names, key=ab.order)) if names else "an empty plan"
    raise PlanValidationError(
        f"{prefix}: cannot infer the protocol of {plan}: drugs need Lipiodol (cTACE) or drug-eluting beads "
        "(DEB-TACE). Add one of them, remove the drugs for bland embolisation, or pass protocol= explicitly.",
        rule=rule,
    )


def _check_agent_rules(ab: ActionBase, agents: list[Agent]) -> None:
    """Rules that depend on the agents alone: R5 (an embolic), R1/R2 (exclusive classes), R3 (conflicts)."""
    agents = sorted({a.name: a for a in agents}.values(), key=lambda a: ab.order(a.name))
    names = [a.name for a in agents]
    # R5: at least one embolic
    rid, label, minimum = ab.min_embolics
    if sum(not a.is_drug for a in agents) < minimum:
        rule, prefix = _rule(rid, label)
        raise PlanValidationError(
            f"{prefix}: the plan {_join(names) if names else '(empty)'} has no embolic agent. Add one, e.g. "
            "Lipiodol (cTACE), Drug-eluting Beads (DEB-TACE) or Gelatin Sponge.", rule=rule)
    # R1, R2: exclusive classes
    for cr in ab.class_rules:
        members = [a.name for a in agents if a.cls == cr.cls]
        if len(members) > cr.max:
            rule, prefix = _rule(cr.id, cr.label)
            both = "both" if len(members) == 2 else "all"
            raise PlanValidationError(f"{prefix}: {_join(members)} are {both} {cr.cls} agents. Keep one.",
                                      rule=rule)
    # R3: embolic conflicts
    present = set(names)
    for pair in ab.conflicts:
        if pair <= present:
            rule, prefix = _rule(*ab.conflict_rule)
            a, b = sorted(pair, key=ab.order)
            raise PlanValidationError(f"{prefix}: {a} and {b} may not be combined. Remove one of them.",
                                      rule=rule)


# ------------------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class Plan:
    """A validated TACE plan. Build it with `Plan.from_agents`, `Plan.parse` or `Plan.from_dict`.

    Fields are canonical: ``agents`` in Action Base order (drugs, then embolics), no duplicates; ``dose_items`` in the
    same order. Equality and hashing use agents, protocol and doses; `key` is the agents alone.

    Attributes:
        agents: canonical agent names.
        protocol: the `Protocol`.
        dose_items: ``((agent, Dose), ...)`` for agents with a known dose.
    """

    agents: tuple[str, ...]
    protocol: Protocol
    dose_items: tuple[tuple[str, Dose], ...] = ()
    action_base: ActionBase | None = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        ab = self.action_base or default_action_base()
        names = {ab.canonical(a) for a in self.agents}
        doses: dict[str, Dose] = {}
        for name, dose in self.dose_items:
            canonical = ab.canonical(name)
            if canonical not in names:
                raise PlanValidationError(f"A dose is given for {canonical}, which is not in the plan "
                                          f"({_join(sorted(names, key=ab.order)) or 'no agents'}).", rule="dose")
            if canonical in doses:
                raise PlanValidationError(f"Two doses are given for {canonical} ({doses[canonical]} and {dose}); "
                                          "give one total dose.", rule="dose")
            doses[canonical] = Dose.coerce(dose, ab.agent(canonical).unit)
        object.__setattr__(self, "action_base", ab)
        object.__setattr__(self, "agents", tuple(sorted(names, key=ab.order)))
        object.__setattr__(self, "dose_items", tuple(sorted(doses.items(), key=lambda kv: ab.order(kv[0]))))
        object.__setattr__(self, "protocol", Protocol.from_name(self.protocol))
        self.validate()

    # -------------------------------------------------------------------------------------------- builders
    @classmethod
    def from_agents(
        cls,
        names: Iterable[str],
        doses: Mapping[str, Dose | str | tuple | float] | None = None,
        protocol: Protocol | str | None = None,
        action_base: ActionBase | None = None,
    ) -> "Plan":
        """A validated plan from agent names or aliases (any order, any case).

        Args:
            names: agents or aliases (``["THP", "Lobaplatin", "Lipiodol"]``); duplicates via aliases merge.
            doses: agent or alias → `Dose`, ``"50 mg"``, ``(50, "mg")`` or a number in the agent's unit.
            protocol: a `Protocol` or its name; ``None`` infers it (`infer_protocol`).
            action_base: default `default_action_base()`.

        Raises:
            UnknownAgentError: a name is not in the Action Base (with suggestions).
            PlanValidationError: the plan breaks a rule; ``.rule`` names it.
        """
        ab = action_base or default_action_base()
        if isinstance(names, str):
            raise PlanValidationError(f"from_agents expects a list of names, got the string {names!r}; "
                                      "use Plan.parse for text.", rule="format")
        agents = tuple(ab.canonical(n) for n in names)
        _check_agent_rules(ab, [ab.agent(a) for a in agents])  # agent rules first: clearer than a protocol error
        proto = infer_protocol(agents, ab) if protocol is None else Protocol.from_name(protocol)
        dose_items = tuple((name, dose) for name, dose in (doses or {}).items())
        return cls(agents=agents, protocol=proto, dose_items=dose_items, action_base=ab)

    @classmethod
    def parse(cls, text: str, protocol: Protocol | str | None = None,
              action_base: ActionBase | None = None) -> "Plan":
        """A plan from keywords or from a free-text procedure note.

        Keyword mode: agents separated by ``;``, ``,``, ``+``, ``and`` or new lines, each optionally with one dose
        (``"Lobaplatin 50 mg; Epirubicin; Lipiodol 10 ml"``, ``"THP + DC Beads"``). An unknown keyword raises
        `UnknownAgentError` with the closest names.

        Free-text mode (any clause that mentions an agent among other words): agents are found by their names and
        aliases; each dose (``"4 mg"``, ``"5 ml"``, ``"1 vial"``) goes to the nearest agent mention in the same clause
        whose unit matches, and doses of one agent add up (infused + emulsified). Dose ranges (``"20-50 mg"``) and
        numbers with no matching agent in their clause are not attributed. Negations are not understood.

        Raises:
            UnknownAgentError, PlanValidationError: as `from_agents`; also when no agent is found at all.
        """
        ab = action_base or default_action_base()
        if not isinstance(text, str) or not text.strip():
            raise PlanValidationError(f"Cannot parse a plan from {text!r}: the text is empty.", rule="parse")
        pieces = [p.strip() for p in _KEYWORD_SPLIT.split(text) if p and p.strip()]
        mode = _choose_mode(pieces, ab)
        if mode == "keywords":
            names, doses = _parse_keywords(pieces, ab)
        else:
            names, doses = _parse_note(text, ab)
        return cls.from_agents(names, doses=doses, protocol=protocol, action_base=ab)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], action_base: ActionBase | None = None) -> "Plan":
        """Inverse of `to_dict`: ``{"agents": [...], "protocol": "cTACE", "doses": {"X": {"value": 50, "unit": "mg"}}}``."""
        if not isinstance(d, Mapping) or not isinstance(d.get("agents"), list):
            raise PlanValidationError(f"A plan dict needs an 'agents' list; got {d!r}.", rule="format")
        raw = d.get("doses") or {}
        if not isinstance(raw, Mapping):
            raise PlanValidationError(f"A plan dict's 'doses' must map agent to dose; got {raw!r}.", rule="format")
        doses: dict[str, Dose] = {}
        for name, v in raw.items():
            if not (isinstance(v, Mapping) and "value" in v and "unit" in v):
                raise PlanValidationError(f"Dose of {name!r} must be {{'value': ..., 'unit': ...}}; got {v!r}.",
                                          rule="format")
            doses[name] = Dose(v["value"], v["unit"])
        return cls.from_agents(d["agents"], doses=doses, protocol=d.get("protocol"), action_base=action_base)

    # -------------------------------------------------------------------------------------------- validation
    def validate(self) -> "Plan":
        """Check every rule; return ``self``. Raises `PlanValidationError` naming the rule and the agents."""
        ab = self.action_base or default_action_base()
        agents = [ab.agent(a) for a in self.agents]
        _check_agent_rules(ab, agents)
        # R4: protocol
        self._check_protocol(ab, agents)
        # doses
        for name, dose in self.dose_items:
            self._check_dose(ab, ab.agent(name), dose)
        return self

    def _check_protocol(self, ab: ActionBase, agents: list[Agent]) -> None:
        spec = ab.protocols[self.protocol.value]
        rule = f"{spec.id} protocol"
        prefix = _rule(spec.id, f"protocol {spec.name}: {spec.label}")[1]
        names = {a.name for a in agents}
        n_drugs = sum(a.is_drug for a in agents)
        plan = _join([a.name for a in agents])
        missing = [n for n in spec.requires_agents if n not in names]
        if missing:
            raise PlanValidationError(f"{prefix}: requires {_join(missing)}; the plan is {plan}. "
                                      f"{spec.description}", rule=rule)
        forbidden = [n for n in spec.forbids_agents if n in names]
        if forbidden:
            raise PlanValidationError(f"{prefix}: {_join(forbidden)} is not part of {spec.name}; the plan is "
                                      f"{plan}. {spec.description}", rule=rule)
        for cls_name in spec.requires_classes:
            if not any(a.cls == cls_name for a in agents):
                raise PlanValidationError(f"{prefix}: requires {_article(cls_name)} {cls_name} drug (e.g. "
                                          f"{_join(ab.classes.get(cls_name, ()))}); the plan is {plan}. "
                                          f"{spec.description}", rule=rule)
        if n_drugs < spec.min_drugs or (spec.max_drugs is not None and n_drugs > spec.max_drugs):
            want = (f"no drugs" if spec.max_drugs == 0 else
                    f"at least {spec.min_drugs} drug{'s' if spec.min_drugs != 1 else ''}")
            raise PlanValidationError(f"{prefix}: needs {want}, the plan has {n_drugs} ({plan}). "
                                      f"{spec.description}", rule=rule)

    @staticmethod
    def _check_dose(ab: ActionBase, agent: Agent, dose: Dose) -> None:
        if agent.unit is None:
            raise PlanValidationError(f"Dose rule: {agent.name} takes no dose ({agent.dose_note}); got {dose}.",
                                      rule="dose")
        if dose.unit != agent.unit:
            raise PlanValidationError(f"Dose rule: {agent.name} is dosed in {agent.unit}, got {dose}.", rule="dose")
        limit = ab.dose_plausible_factor * agent.dose_max
        if dose.value > limit:
            raise PlanValidationError(
                f"Dose rule: {agent.name} {dose} is implausible: the typical range is {agent.dose_min:g}-"
                f"{agent.dose_max:g} {agent.unit} and doses above {limit:g} {agent.unit} "
                f"({ab.dose_plausible_factor:g}x the maximum) are refused. Check the value and unit.", rule="dose")

    # -------------------------------------------------------------------------------------------- views
    @property
    def _ab(self) -> ActionBase:
        return self.action_base or default_action_base()

    @property
    def drugs(self) -> tuple[str, ...]:
        return tuple(a for a in self.agents if self._ab.agent(a).is_drug)

    @property
    def embolics(self) -> tuple[str, ...]:
        return tuple(a for a in self.agents if not self._ab.agent(a).is_drug)

    @property
    def drug_classes(self) -> tuple[str, ...]:
        """Classes of the plan's drugs, one per drug, in canonical order."""
        return tuple(self._ab.agent(a).cls for a in self.drugs)

    @property
    def doses(self) -> dict[str, Dose]:
        return dict(self.dose_items)

    def key(self) -> tuple[str, ...]:
        """The agents alone (canonical order): plans that differ in doses share a key."""
        return self.agents

    def canonical(self) -> str:
        """Stable text: ``"Lobaplatin 50 mg; Epirubicin 30 mg; Lipiodol 10 ml"`` (drugs first, table order)."""
        doses = self.doses
        return "; ".join(f"{a} {doses[a]}" if a in doses else a for a in self.agents)

    def __str__(self) -> str:
        return self.canonical()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``{"agents": [...], "protocol": "cTACE", "doses": {agent: {"value", "unit"}}}``."""
        return {
            "agents": list(self.agents),
            "protocol": self.protocol.value,
            "doses": {a: {"value": d.value, "unit": d.unit} for a, d in self.dose_items},
        }


# ------------------------------------------------------------------------------------------------ parsing
_KEYWORD_SPLIT = re.compile(r";|,|\+|\n|\band\b", re.IGNORECASE)
_CLAUSE_SPLIT = re.compile(r";|\n|\.(?!\d)")
_DOSE = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)(?:\s*(?:-|–|~|to)\s*(\d+(?:\.\d+)?))?\s*(mg|ml|cc|vials?)(?![A-Za-z])",
    re.IGNORECASE,
)
_PARENS = re.compile(r"\([^)]*\)")


@lru_cache(maxsize=8)
def _mention_pattern(ab: ActionBase) -> re.Pattern[str]:
    """One regex matching any agent name or alias as whole words; longer names first so they win."""
    keys = sorted(ab.aliases, key=len, reverse=True)
    parts = [r"[\s\-_]+".join(re.escape(t) for t in k.split(" ")) for k in keys]
    return re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(parts) + r")(?![A-Za-z0-9])", re.IGNORECASE)


def _strip_doses(piece: str) -> tuple[str, list[re.Match[str]]]:
    doses = list(_DOSE.finditer(piece))
    return _DOSE.sub(" ", _PARENS.sub(" ", piece)).strip(), doses


def _choose_mode(pieces: list[str], ab: ActionBase) -> str:
    """"keywords" when every piece is a short name (an agent, or an unknown word to report); else "note"."""
    pattern = _mention_pattern(ab)
    for piece in pieces:
        name, _ = _strip_doses(piece)
        if name and ab.is_known(name):
            continue
        if len(name.split()) > 3 or pattern.search(name):
            return "note"
    return "keywords"


def _parse_keywords(pieces: list[str], ab: ActionBase) -> tuple[list[str], dict[str, Dose]]:
    names: list[str] = []
    doses: dict[str, Dose] = {}
    for piece in pieces:
        name, found = _strip_doses(piece)
        if not name:
            raise PlanValidationError(f"The keyword {piece!r} has a dose but no agent.", rule="parse")
        canonical = ab.canonical(name)  # raises UnknownAgentError with suggestions
        names.append(canonical)
        if len(found) > 1 or any(m.group(2) for m in found):
            raise PlanValidationError(f"The keyword {piece!r} has {'a dose range' if len(found) == 1 else 'several doses'}"
                                      f"; give one dose per agent (e.g. '{canonical} 50 mg').", rule="dose")
        if found:
            if canonical in doses:
                raise PlanValidationError(f"{canonical} is listed twice with doses; give one total dose.", rule="dose")
            doses[canonical] = Dose(float(found[0].group(1)), found[0].group(3))
    return names, doses


def _parse_note(text: str, ab: ActionBase) -> tuple[list[str], dict[str, Dose]]:
    pattern = _mention_pattern(ab)
    names: list[str] = []
    totals: dict[str, float] = {}
    units: dict[str, str] = {}
    start = 0
    clauses = []
    for m in _CLAUSE_SPLIT.finditer(text + ";"):
        clauses.append(text[start:m.start()])
        start = m.end()
    for clause in clauses:
        mentions = [(m.start(), m.end(), ab.canonical(m.group(0))) for m in pattern.finditer(clause)]
        for _, _, name in mentions:
            if name not in names:
                names.append(name)
        for d in _DOSE.finditer(clause):
            if d.group(2):  # a range: not a single administered dose
                continue
            dose = Dose(float(d.group(1)), d.group(3))
            candidates = [(s, e, n) for s, e, n in mentions if ab.agent(n).unit == dose.unit]
            if not candidates:
                continue

            def distance(mention: tuple[int, int, str]) -> tuple[int, int]:
                s, e, _ = mention
                return (d.start() - e, 0) if e <= d.start() else (s - d.end(), 1)  # ties: the agent before

            _, _, agent = min(candidates, key=distance)
            totals[agent] = totals.get(agent, 0.0) + dose.value
            units[agent] = dose.unit
    if not names:
        raise PlanValidationError(
            f"No Action Base agent was found in the note {text[:80]!r}{'...' if len(text) > 80 else ''}. Name the agents "
            "(e.g. 'Epirubicin; Lipiodol') or add brand names with an extra aliases file.", rule="parse")
    return names, {a: Dose(v, units[a]) for a, v in totals.items()}


# ------------------------------------------------------------------------------------------------ search space
def enumerate_plans(action_base: ActionBase | None = None, max_drugs: int | None = None,
                    max_embolics: int | None = None,
                    protocols: Iterable[Protocol | str] | None = None) -> list[Plan]:
    """Every admissible plan (no doses) with up to ``max_drugs`` drugs and ``max_embolics`` embolics.

    Order is deterministic (protocol in `Protocol` order, then drug sets by size and table order, then embolic sets),
    so a plan's index is stable across runs for the same table. With the packaged table and horizons 2/2 this gives
    443 plans (cTACE 270, DEB-TACE 160, bland 13).

    Args:
        max_drugs, max_embolics: horizons; default the table's (2 and 2).
        protocols: restrict to these protocols (default all).
    """
    ab = action_base or default_action_base()
    max_drugs = ab.max_drugs if max_drugs is None else int(max_drugs)
    max_embolics = ab.max_embolics if max_embolics is None else int(max_embolics)
    if max_drugs < 0 or max_embolics < 1:
        raise PlanValidationError(f"enumerate_plans needs max_drugs >= 0 and max_embolics >= 1; got {max_drugs} "
                                  f"and {max_embolics}.", rule="horizon")
    wanted = list(Protocol) if protocols is None else [Protocol.from_name(p) for p in protocols]
    drug_sets = [c for k in range(max_drugs + 1) for c in itertools.combinations([a.name for a in ab.drugs], k)]
    emb_sets = [c for k in range(1, max_embolics + 1) for c in itertools.combinations([a.name for a in ab.embolics], k)]
    plans: list[Plan] = []
    for proto in sorted(set(wanted), key=list(Protocol).index):
        for drugs in drug_sets:
            for embolics in emb_sets:
                try:
                    plans.append(Plan(drugs + embolics, proto, action_base=ab))
                except PlanValidationError:
                    continue  # inadmissible under the rules: not part of the search space
    return plans


# ------------------------------------------------------------------------------------------------ evaluation
def keyword_metrics(pred: Plan, ref: Plan) -> dict[str, float]:
    """Set overlap of agent keywords (drugs + embolics), as in the reference evaluation of plan choice.

    Returns ``{"precision": |P∩R|/|P|, "recall": |P∩R|/|R|, "f1": harmonic mean, "jaccard": |P∩R|/|P∪R|}``,
    each in [0, 1] (0 when a denominator is 0). Doses and protocol are ignored.
    """
    p, r = set(pred.key()), set(ref.key())
    inter = len(p & r)
    precision = inter / len(p) if p else 0.0
    recall = inter / len(r) if r else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    jaccard = inter / len(p | r) if p | r else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "jaccard": jaccard}
