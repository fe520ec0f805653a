"""Strict reading of a model's proposal and the bounded retry loop shared by the ``openai`` and ``hf`` backends.

A reply is used only if it is one JSON object with exactly the schema's keys (`pipelines.policy.prompt`), every
agent resolves in the Action Base (aliases allowed, e.g. "THP" → Pirarubicin) and is of the right kind, the
preferred plan obeys every rule, and the proposal yields at least one admissible plan. The only leniency is a
Markdown code fence around the object, which many chat models add even in JSON mode. Anything else is a list of
problems sent back to the model; after ``max_retries`` retries the last problems become a `PolicyReplyError`, a
refusal a `PolicyRefusalError`. Never an empty plan.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.action_base import default_action_base
from models.errors import PlanValidationError, PolicyError, PolicyRefusalError, PolicyReplyError
from models.plan import Plan, Protocol
from pipelines.policy.base import Proposal
from pipelines.policy.prompt import REPLY_KEYS, retry_text

__all__ = ["ModelReply", "proposal_from_reply", "propose_with_retries", "Turn"]

_FENCE = re.compile(r"\A```(?:json|JSON)?\s*\n?(.*?)\n?```\Z", re.DOTALL)


@dataclass(frozen=True)
class ModelReply:
    """One reply: its text, and the refusal the server reported (OpenAI ``message.refusal``), if any."""

    text: str | None
    refusal: str | None = None


@dataclass(frozen=True)
class Turn:
    """A failed attempt to show the model on the next one: its reply and our follow-up message."""

    reply: str
    feedback: str


class _Invalid(Exception):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def _agents(value: Any, key: str, kind: str, problems: list[str]) -> list[str]:
    ab = default_action_base()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{key} must be a list of agent names (strings); got {json.dumps(value)[:80]}.")
        return []
    out: list[str] = []
    for name in value:
        if not ab.is_known(name):
            hints = ab.suggest(name)
            hint = f" (did you mean {' or '.join(hints)}?)" if hints else ""
            problems.append(f"{key}: {name!r} is not an agent of the Action Base{hint}.")
            continue
        agent = ab.agent(name)
        if agent.kind != kind:
            problems.append(f"{key}: {agent.name} is {'an' if agent.kind == 'embolic' else 'a'} {agent.kind}, "
                            f"not {'an' if kind == 'embolic' else 'a'} {kind}.")
        elif agent.name not in out:
            out.append(agent.name)
    return out


def _parse(text: str) -> dict[str, Any]:
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        data = json.loads(body)
    except json.JSONDecodeError as e:
        raise _Invalid([f"the reply is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); send only the "
                        "JSON object."]) from e
    if not isinstance(data, dict):
        raise _Invalid([f"the reply must be a JSON object, got a JSON {type(data).__name__}."])
    return data


def _check(data: dict[str, Any], backend: str, model: str, raw: str, attempts: int) -> Proposal:
    problems: list[str] = []
    missing = [k for k in REPLY_KEYS if k not in data]
    extra = [k for k in data if k not in REPLY_KEYS]
    if missing:
        problems.append(f"missing key(s): {', '.join(missing)}.")
    if extra:
        problems.append(f"unexpected key(s): {', '.join(extra)}; use exactly {', '.join(REPLY_KEYS)}.")
    drugs = _agents(data.get("drug_set", []), "drug_set", "drug", problems)
    embolics = _agents(data.get("embolic_set", []), "embolic_set", "embolic", problems)
    if "embolic_set" in data and not embolics and isinstance(data["embolic_set"], list) and not data["embolic_set"]:
        problems.append("embolic_set is empty; every plan needs at least one embolic agent (rule R5).")
    protocols: list[Protocol] = []
    raw_protocols = data.get("protocols", [])
    if not isinstance(raw_protocols, list) or not raw_protocols:
        problems.append("protocols must be a non-empty list of cTACE, DEB-TACE, bland.")
    else:
        for p in raw_protocols:
            try:
                protocols.append(Protocol.from_name(str(p)))
            except PlanValidationError:
                problems.append(f"protocols: {p!r} is not one of cTACE, DEB-TACE, bland.")
    preferred = None
    pref = data.get("preferred_plan")
    if "preferred_plan" in data:
        if not (isinstance(pref, dict) and set(pref) == {"agents", "protocol"}
                and isinstance(pref["agents"], list) and isinstance(pref["protocol"], str)):
            problems.append('preferred_plan must be {"agents": [names], "protocol": "cTACE" | "DEB-TACE" | "bland"}.')
        else:
            try:
                preferred = Plan.from_agents(pref["agents"], protocol=pref["protocol"])
            except PlanValidationError as e:  # unknown agent or a broken rule: the message names it
                problems.append(f"preferred_plan is invalid{' (' + e.rule + ')' if e.rule else ''}: {e}")
            if preferred is not None:
                outside = [a for a in preferred.agents if a not in drugs and a not in embolics]
                if outside:
                    problems.append(f"preferred_plan uses {', '.join(outside)}, not listed in drug_set/embolic_set.")
                if protocols and preferred.protocol not in protocols:
                    problems.append(f"preferred_plan protocol {preferred.protocol.value} is not in protocols.")
    rationale = data.get("rationale")
    if "rationale" in data and not (isinstance(rationale, str) and rationale.strip()):
        problems.append("rationale must be a non-empty string.")
    if problems:
        raise _Invalid(problems)
    try:
        proposal = Proposal(drugs=tuple(drugs), embolics=tuple(embolics), protocols=tuple(protocols),
                            preferred=preferred, rationale=rationale.strip(), backend=backend, model=model,
                            raw_reply=raw, attempts=attempts)
        proposal.candidate_plans()
    except PolicyError as e:
        raise _Invalid([str(e)]) from e
    return proposal


def proposal_from_reply(text: str, backend: str, model: str, attempts: int = 1) -> Proposal:
    """A validated `Proposal` from one reply's text.

    Raises:
        PolicyReplyError: the reply is unusable; ``.problems`` lists every reason (also sent back on a retry).
    """
    try:
        return _check(_parse(text), backend, model, text, attempts)
    except _Invalid as e:
        raise PolicyReplyError(f"The {backend} policy's reply is invalid: {'; '.join(e.problems)}",
                               problems=e.problems, raw_reply=text, attempts=attempts) from None


def propose_with_retries(ask: Callable[[list[Turn]], ModelReply], backend: str, model: str,
                         max_retries: int) -> Proposal:
    """Ask, validate, and ask again with the problems, at most ``1 + max_retries`` times.

    Args:
        ask: sends the prompt plus the failed turns so far and returns the model's reply (transport errors are
            raised by ``ask`` itself as `PolicyConnectionError` and are not retried here).
        backend, model: recorded in the proposal and named in errors.
        max_retries: retries after the first attempt (``[policy] max_retries``).

    Raises:
        PolicyRefusalError: the last attempt was a refusal or had no content.
        PolicyReplyError: the last attempt was invalid; ``.problems`` says why.
    """
    if max_retries < 0:
        raise PolicyError(f"max_retries must be >= 0, got {max_retries}.")
    history: list[Turn] = []
    total = 1 + int(max_retries)
    for attempt in range(1, total + 1):
        reply = ask(list(history))
        text = (reply.text or "").strip()
        if reply.refusal or not text:
            reason = (f"the model refused: {reply.refusal.strip()}" if reply.refusal
                      else "the reply had no content")
            if attempt == total:
                raise PolicyRefusalError(
                    f"The {backend} policy ({model}) gave no proposal after {total} attempt(s): {reason}. Try another "
                    "model or the guideline backend ([policy] backend = \"guideline\").")
            history.append(Turn(reply.refusal or "", retry_text([reason + "; a JSON proposal is required"])))
            continue
        try:
            return proposal_from_reply(text, backend, model, attempts=attempt)
        except PolicyReplyError as e:
            if attempt == total:
                raise PolicyReplyError(
                    f"The {backend} policy ({model}) gave no valid proposal after {total} attempt(s). Last reply's "
                    f"problems: {'; '.join(e.problems)}", problems=e.problems, raw_reply=text, attempts=total) from None
            history.append(Turn(text, retry_text(e.problems)))
    raise AssertionError("unreachable")  # pragma: no cover
