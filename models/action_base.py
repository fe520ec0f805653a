"""The TACE Action Base: agents, aliases, rules, protocols and horizons, loaded from one data table.

The table is ``models/data/action_base.json``; this module only types it. Every consumer (policy, plan search, UI,
validators) reads the same `ActionBase`, so a rule or an alias changes in one place.

Names are resolved case-insensitively, with spaces, hyphens and underscores treated alike
(``"l-ohp"`` → Oxaliplatin, ``"THP"`` → Pirarubicin, ``"LC Beads"`` → Drug-eluting Beads). Users add brand names with
an extra JSON file mapping alias → agent (``load_action_base(extra_aliases_path=...)``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from models.errors import ConfigError, UnknownAgentError

__all__ = [
    "Agent",
    "ClassRule",
    "ProtocolSpec",
    "ActionBase",
    "ACTION_BASE_PATH",
    "load_action_base",
    "default_action_base",
    "normalize_name",
]

ACTION_BASE_PATH = Path(__file__).resolve().parent / "data" / "action_base.json"

_SEPARATORS = re.compile(r"[\s\-_]+")


def normalize_name(name: str) -> str:
    """Lookup key of an agent name or alias: lower case, runs of spaces/hyphens/underscores → one space."""
    return _SEPARATORS.sub(" ", name.strip().lower()).strip()


@dataclass(frozen=True)
class Agent:
    """One agent of the Action Base.

    Args:
        name: canonical name (``"Pirarubicin"``).
        kind: ``"drug"`` or ``"embolic"``.
        cls: pharmacological / embolic class (``"platinum"``, ``"anthracycline"``, ``"temporary particulate"``…).
        dose_min, dose_max: typical dose range in ``unit``; ``None`` when no dose is recorded (particles).
        unit: ``"mg"``, ``"ml"``, ``"vial"`` or ``None``.
        aliases: abbreviations and brand names (``("THP", "THP-ADM", "Theprubicin")``).
        dose_note: free-text note on the typical dose and the source of the aliases.
    """

    name: str
    kind: Literal["drug", "embolic"]
    cls: str
    dose_min: float | None
    dose_max: float | None
    unit: str | None
    aliases: tuple[str, ...] = ()
    dose_note: str = ""

    @property
    def is_drug(self) -> bool:
        return self.kind == "drug"


@dataclass(frozen=True)
class ClassRule:
    """At most ``max`` agents of class ``cls`` in one plan (rules R1 platinum, R2 anthracycline)."""

    id: str
    label: str
    cls: str
    max: int


@dataclass(frozen=True)
class ProtocolSpec:
    """What a protocol requires and forbids (rule R4). ``max_drugs=None`` means no cap."""

    name: str
    id: str
    label: str
    description: str
    requires_agents: tuple[str, ...]
    forbids_agents: tuple[str, ...]
    requires_classes: tuple[str, ...]
    min_drugs: int
    max_drugs: int | None


@dataclass(frozen=True, eq=False)
class ActionBase:
    """The typed Action Base. Build it with `load_action_base` or `default_action_base`.

    Attributes:
        agents: every agent, in canonical order (drugs first, then embolics, table order).
        class_rules: exclusive-class rules (R1, R2).
        conflict_rule: ``(id, label)`` of the embolic conflict rule (R3).
        conflicts: unordered agent pairs that may not appear together.
        min_embolics: ``(id, label, min)`` of the at-least-one-embolic rule (R5).
        protocols: protocol name → `ProtocolSpec`.
        max_drugs, max_embolics: default search horizons (not validation limits).
        dose_plausible_factor: a dose above ``factor * dose_max`` is implausible (an error).
    """

    agents: tuple[Agent, ...]
    class_rules: tuple[ClassRule, ...]
    conflict_rule: tuple[str, str]
    conflicts: tuple[frozenset[str], ...]
    min_embolics: tuple[str, str, int]
    protocols: dict[str, ProtocolSpec]
    max_drugs: int
    max_embolics: int
    dose_plausible_factor: float
    _lookup: dict[str, str]

    # -------------------------------------------------------------------------------------------- lookups
    def agent(self, name_or_alias: str) -> Agent:
        """The agent named ``name_or_alias`` (canonical name or alias, any case).

        Raises:
            UnknownAgentError: the name is not in the table; the message suggests the closest names.
        """
        if not isinstance(name_or_alias, str):
            raise UnknownAgentError(f"Agent names are strings; got {type(name_or_alias).__name__} {name_or_alias!r}.")
        key = normalize_name(name_or_alias)
        canonical = self._lookup.get(key)
        if canonical is None:
            raise UnknownAgentError(self._unknown_message(name_or_alias), rule="unknown agent")
        return self._by_name[canonical]

    def canonical(self, name_or_alias: str) -> str:
        """Canonical name of an agent or alias (see `agent`)."""
        return self.agent(name_or_alias).name

    def is_known(self, name_or_alias: str) -> bool:
        return normalize_name(name_or_alias) in self._lookup

    def suggest(self, name: str, n: int = 3) -> list[str]:
        """Up to ``n`` canonical names closest to ``name`` (by its closest names or aliases), best first."""
        keys = difflib.get_close_matches(normalize_name(name), list(self._lookup), n=3 * n, cutoff=0.6)
        out: list[str] = []
        for k in keys:
            c = self._lookup[k]
            if c not in out:
                out.append(c)
        return out[:n]

    def _unknown_message(self, name: str) -> str:
        hints = self.suggest(name)
        hint = f" Did you mean {' or '.join(repr(h) for h in hints)}?" if hints else ""
        return (
            f"Unknown agent {name!r}: not an agent or alias of the Action Base.{hint} "
            f"Known agents: {', '.join(a.name for a in self.agents)}. "
            "Add a brand name with an extra aliases JSON file (load_action_base(extra_aliases_path=...))."
        )

    # -------------------------------------------------------------------------------------------- views
    @property
    def _by_name(self) -> dict[str, Agent]:
        return {a.name: a for a in self.agents}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.agents)

    @property
    def drugs(self) -> tuple[Agent, ...]:
        return tuple(a for a in self.agents if a.kind == "drug")

    @property
    def embolics(self) -> tuple[Agent, ...]:
        return tuple(a for a in self.agents if a.kind == "embolic")

    @property
    def classes(self) -> dict[str, tuple[str, ...]]:
        """Class name → canonical names of its agents, in table order."""
        out: dict[str, list[str]] = {}
        for a in self.agents:
            out.setdefault(a.cls, []).append(a.name)
        return {k: tuple(v) for k, v in out.items()}

    @property
    def aliases(self) -> dict[str, str]:
        """Every lookup key (normalised name or alias) → canonical name."""
        return dict(self._lookup)

    def order(self, name: str) -> int:
        """Position of a canonical name in the canonical order (drugs first, then embolics)."""
        return self.names.index(name)

    def __repr__(self) -> str:
        return f"ActionBase({len(self.drugs)} drugs, {len(self.embolics)} embolics, protocols={list(self.protocols)})"


# ------------------------------------------------------------------------------------------------ loading
def _table_error(where: str, e: Exception) -> ConfigError:
    return ConfigError(f"Action Base table {where} is malformed: {e}. Fix the file or restore the packaged one.")


def _build(table: dict[str, Any], where: str) -> ActionBase:
    try:
        agents = []
        for row in table["agents"]:
            if row["kind"] not in ("drug", "embolic"):
                raise ValueError(f"agent {row['name']!r} has kind {row['kind']!r}; expected 'drug' or 'embolic'")
            agents.append(Agent(
                name=row["name"], kind=row["kind"], cls=row["class"],
                dose_min=None if row["dose_min"] is None else float(row["dose_min"]),
                dose_max=None if row["dose_max"] is None else float(row["dose_max"]),
                unit=row["unit"], aliases=tuple(row.get("aliases", ())), dose_note=row.get("dose_note", ""),
            ))
        agents.sort(key=lambda a: 0 if a.kind == "drug" else 1)  # stable: table order within each kind
        rules = table["rules"]
        class_rules = tuple(ClassRule(r["id"], r["label"], r["class"], int(r["max"])) for r in rules["exclusive_classes"])
        conf = rules["conflicts"]
        conflicts = tuple(frozenset(p) for p in conf["pairs"])
        me = rules["min_embolics"]
        protocols = {
            name: ProtocolSpec(
                name=name, id=p["id"], label=p["label"], description=p["description"],
                requires_agents=tuple(p["requires_agents"]), forbids_agents=tuple(p["forbids_agents"]),
                requires_classes=tuple(p["requires_classes"]), min_drugs=int(p["min_drugs"]),
                max_drugs=None if p["max_drugs"] is None else int(p["max_drugs"]),
            )
            for name, p in table["protocols"].items()
        }
        hz = table["horizons"]
        ab_kwargs = dict(
            class_rules=class_rules, conflict_rule=(conf["id"], conf["label"]), conflicts=conflicts,
            min_embolics=(me["id"], me["label"], int(me["min"])), protocols=protocols,
            max_drugs=int(hz["max_drugs"]), max_embolics=int(hz["max_embolics"]),
            dose_plausible_factor=float(rules["dose_plausible_factor"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise _table_error(where, e) from e

    lookup: dict[str, str] = {}
    for a in agents:
        for alias in (a.name, *a.aliases):
            key = normalize_name(alias)
            if lookup.get(key, a.name) != a.name:
                raise ConfigError(f"Action Base table {where}: alias {alias!r} names both {lookup[key]} and {a.name}.")
            lookup[key] = a.name
    names = {a.name for a in agents}
    referenced = [n for p in conflicts for n in p]
    referenced += [n for p in protocols.values() for n in (*p.requires_agents, *p.forbids_agents)]
    missing = sorted(set(referenced) - names)
    if missing:
        raise ConfigError(f"Action Base table {where}: rules name agents not in the table: {', '.join(missing)}.")
    return ActionBase(agents=tuple(agents), _lookup=lookup, **ab_kwargs)


def _add_aliases(ab: ActionBase, path: Path) -> ActionBase:
    """Extra aliases: a JSON object ``{"alias": "agent or existing alias", ...}`` (or under an ``"aliases"`` key)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"Extra aliases file {path} does not exist.") from e
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"Extra aliases file {path} is not readable JSON: {e}") from e
    if isinstance(data, dict) and isinstance(data.get("aliases"), dict):
        data = data["aliases"]
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(
            f"Extra aliases file {path} must hold a JSON object mapping alias to agent, "
            'e.g. {"Farmorubicin": "Epirubicin"}.'
        )
    lookup = dict(ab._lookup)
    for alias, target in data.items():
        try:
            canonical = ab.canonical(target)
        except UnknownAgentError as e:
            raise UnknownAgentError(f"Extra aliases file {path}: alias {alias!r} points to an unknown agent. {e}",
                                    rule="unknown agent") from e
        key = normalize_name(alias)
        if not key:
            raise ConfigError(f"Extra aliases file {path}: an empty alias points to {target!r}.")
        if lookup.get(key, canonical) != canonical:
            raise ConfigError(
                f"Extra aliases file {path}: alias {alias!r} → {canonical} conflicts with the table, where it means "
                f"{lookup[key]}. Remove it from the file."
            )
        lookup[key] = canonical
    agents = tuple(
        Agent(a.name, a.kind, a.cls, a.dose_min, a.dose_max, a.unit,
              a.aliases + tuple(k for k, v in data.items() if ab.canonical(v) == a.name), a.dose_note)
        for a in ab.agents
    )
    fields = {f: getattr(ab, f) for f in ab.__dataclass_fields__}
    fields.update(agents=agents, _lookup=lookup)
    return ActionBase(**fields)


def load_action_base(extra_aliases_path: str | os.PathLike | None = None,
                     table_path: str | os.PathLike | None = None) -> ActionBase:
    """Load the Action Base table, optionally adding user aliases.

    Args:
        extra_aliases_path: a JSON file mapping alias → agent name (``{"Farmorubicin": "Epirubicin"}``).
        table_path: another table in the same format (default: the packaged ``models/data/action_base.json``).

    Raises:
        ConfigError: a file is missing or malformed, or an extra alias clashes with the table.
        UnknownAgentError: an extra alias points to an agent that is not in the table.
    """
    path = Path(table_path) if table_path is not None else ACTION_BASE_PATH
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"Cannot read the Action Base table {path}: {e}") from e
    ab = _build(table, str(path))
    if extra_aliases_path is not None:
        ab = _add_aliases(ab, Path(extra_aliases_path))
    return ab


@lru_cache(maxsize=1)
def default_action_base() -> ActionBase:
    """The packaged Action Base (loaded once; treat it as read-only)."""
    return load_action_base()
