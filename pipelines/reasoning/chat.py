"""One question end to end: prepare → N candidates in one batched call → PRM step scores → guards → the choice.

`answer_question` is what the CLI (`mewm reasoning ask`) and the Reasoning Chat page call; evaluation calls the same
pieces (`score_candidates`, `best_of_n.choose`) on stored candidates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from models.errors import ReasoningInputError
from pipelines.progress import ProgressFn, resolve_progress
from pipelines.reasoning.answers import parse_options
from pipelines.reasoning.backends import PolicyBackend, load_backend
from pipelines.reasoning.best_of_n import AGGREGATIONS, Choice, aggregate, check_eligible, choose, majority_vote
from pipelines.reasoning.candidates import Candidate, sample_candidates
from pipelines.reasoning.prm import StepScorer, load_prm
from pipelines.reasoning.template import prepare_question

__all__ = ["ReasoningResult", "answer_question", "score_candidates", "MAX_N", "DISCLAIMER"]

MAX_N = 32
DISCLAIMER = "Research use only, not for clinical use: answers come from a small model and may be wrong."


@dataclass
class ReasoningResult:
    """A question, its N candidates with per-step PRM scores and aggregates, the PRM choice and the vote."""

    question: str
    options: dict[str, str]
    candidates: list[Candidate]
    choice: Choice
    vote: Choice
    backend: str
    model: str
    prm: str
    settings: dict
    notice: str | None = None  # e.g. the question was truncated
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def chosen(self) -> Candidate | None:
        return None if self.choice.index is None else self.candidates[self.choice.index]

    def to_dict(self) -> dict:
        return {"question": self.question, "options": self.options, "choice": self.choice.to_dict(),
                "vote": self.vote.to_dict(), "backend": self.backend, "model": self.model, "prm": self.prm,
                "settings": self.settings, "notice": self.notice, "timings": self.timings,
                "candidates": [c.to_dict() for c in self.candidates], "disclaimer": DISCLAIMER}

    def text(self) -> str:
        """A plain-text answer for the command line."""
        lines = [DISCLAIMER]
        if self.notice:
            lines.append(self.notice)
        c = self.chosen
        if c is None:
            lines.append(f"No answer: {self.choice.why}. Majority vote: {self.vote.answer or 'none'}.")
            return "\n".join(lines)
        lines.append(c.response)
        flag = " (LOW CONFIDENCE)" if self.choice.low_confidence else ""
        lines.append(f"\nChosen answer: {c.answer}{flag} by {self.choice.selection}/{self.choice.aggregation}: "
                     f"{self.choice.why}. Majority vote: {self.vote.answer}.")
        lines.append(f"[{self.backend}: {self.model}; PRM: {self.prm}; {len(self.candidates)} candidates in "
                     f"{self.timings.get('generate_s', 0):.1f} s + PRM {self.timings.get('prm_s', 0):.1f} s]")
        return "\n".join(lines)


def score_candidates(prm: StepScorer, question: str, options: dict[str, str], candidates: list[Candidate],
                     aggregation: str = "min") -> None:
    """Fill ``step_scores``, ``score`` and eligibility of every candidate (in place); one PRM call for all."""
    scores = prm.score(question, [c.steps for c in candidates], options)
    for c, s in zip(candidates, scores):
        c.step_scores = s
        c.eligible, c.why_ineligible = check_eligible(c, question)
        c.score = aggregate(s, aggregation)


def answer_question(question: str, *, n: int = 8, aggregation: str = "min", selection: str = "best",
                    seed: int = 0, backend: PolicyBackend | None = None, prm: StepScorer | str | None = None,
                    config=None, temperature: float | None = None, max_new_tokens: int | None = None,
                    progress: bool | ProgressFn | None = None) -> ReasoningResult:
    """Answer ``question`` (options inline as ``A. ...`` lines, or none) with PRM best-of-N.

    Args:
        backend, prm: loaded models (the app caches them) or None to load ``[reasoning]``'s; ``prm`` may be a dir.
        selection: ``best`` (argmax of the aggregate), ``pvs`` (P-VS) or ``vote`` (majority).
        progress: ``progress(done, total, message)`` after each of the 3 stages.

    Raises:
        ReasoningInputError: empty question, N out of range, unknown aggregation/selection.
        BackendUnavailableError, CheckpointNotFoundError: from the backend or the PRM.
    """
    from pipelines.config import resolve_config

    # 1. check inputs
    prepared = prepare_question(question)
    if not 1 <= n <= MAX_N:
        raise ReasoningInputError(f"N must be between 1 and {MAX_N}, got {n}.")
    if aggregation not in AGGREGATIONS:
        raise ReasoningInputError(f"Unknown aggregation {aggregation!r}; use one of {', '.join(AGGREGATIONS)}.")
    cfg = resolve_config(config)
    rc = cfg.reasoning
    report = resolve_progress(progress, "reasoning", "stage")
    # 2. models
    backend = backend or load_backend(cfg)
    if prm is None or isinstance(prm, str):
        prm = load_prm(prm or rc.prm_dir, device=rc.device)
    options = parse_options(prepared.text)
    if report:
        report(0, 3, f"sampling {n} candidates")
    # 3. N candidates in one batched call
    t0 = time.perf_counter()
    temp = rc.temperature if temperature is None else temperature
    cands = sample_candidates(backend, prepared.text, options, n=n, temperature=temp if n > 1 else 0.0,
                              max_new_tokens=max_new_tokens or rc.max_new_tokens, seed=seed)
    t1 = time.perf_counter()
    if report:
        report(1, 3, "scoring steps with the PRM")
    # 4. PRM scores, guards, choice
    score_candidates(prm, prepared.text, options, cands, "min" if selection == "pvs" else aggregation)
    t2 = time.perf_counter()
    choice = choose(cands, selection, "min" if selection == "pvs" else aggregation)
    vote = majority_vote(cands)
    if report:
        report(3, 3, "done")
    return ReasoningResult(prepared.text, options, cands, choice, vote, backend.name, backend.model,
                           getattr(prm, "directory", "") or prm.name,
                           {"n": n, "aggregation": aggregation, "selection": selection, "seed": seed,
                            "temperature": temp}, prepared.notice,
                           {"generate_s": round(t1 - t0, 3), "prm_s": round(t2 - t1, 3)})
