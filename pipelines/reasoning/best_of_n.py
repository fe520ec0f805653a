"""Best-of-N answer selection: PRM step scores → response scores → the chosen answer, with reward-hacking guards.

1. **Eligibility (guard a, reference §8)**: a candidate competes only if it has a parsed final answer and at least
   `MIN_SUBSTANTIVE_STEPS` substantive steps after Step 0 (≥ `MIN_STEP_WORDS` words with letters, not a repeat of an
   earlier step, not the opener or the question restated). An opener, a "Thought process:" stub or a bare "The answer
   is X." can never win, whatever the PRM says.
2. **Response score**: the aggregate of the PRM's p_i over steps 1..n (Step 0 is never scored): ``min`` (default,
   the PURE lesson: one bad step sinks a path), ``last``, ``mean`` or ``prod``.
3. **Choice**: ``best`` = argmax of the score (ties: the earlier candidate); ``pvs`` = the answer with the largest sum
   of min-scores over its candidates (MedS3 v1's P-VS), shown by its best candidate; ``vote`` = majority of the parsed
   answers (ties: the answer whose first candidate comes first), shown by its highest-scored candidate if scored.
4. **Low confidence**: flagged when the winner's margin over the best *different* answer is below
   `LOW_CONFIDENCE_MARGIN`, when no candidate is eligible, or when the winning score is below 0.5.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

from models.errors import ReasoningInputError
from pipelines.reasoning.answers import FINAL_ANSWER_RE
from pipelines.reasoning.candidates import Candidate
from pipelines.reasoning.template import ROOT_STEP

__all__ = ["AGGREGATIONS", "SELECTIONS", "aggregate", "substantive_steps", "check_eligible", "Choice", "choose",
           "majority_vote",
           "MIN_SUBSTANTIVE_STEPS", "MIN_STEP_WORDS", "LOW_CONFIDENCE_MARGIN"]

AGGREGATIONS = ("min", "last", "mean", "prod")
SELECTIONS = ("best", "pvs", "vote")
MIN_SUBSTANTIVE_STEPS = 2
MIN_STEP_WORDS = 4
LOW_CONFIDENCE_MARGIN = 0.1
_OPENERS = {"let's break down this problem step by step", "let's solve this problem step by step",
            "thought process", "let's think step by step", "let me think"}


def aggregate(scores: list[float], how: str = "min") -> float:
    """One response score from its per-step scores (steps 1..n). An empty list scores 0 (never a crash)."""
    if how not in AGGREGATIONS:
        raise ReasoningInputError(f"Unknown aggregation {how!r}; use one of {', '.join(AGGREGATIONS)}.")
    if not scores:
        return 0.0
    if how == "min":
        return min(scores)
    if how == "last":
        return scores[-1]
    if how == "mean":
        return sum(scores) / len(scores)
    return math.prod(scores)


def _key(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def substantive_steps(steps: list[str], question: str = "") -> int:
    """Steps after Step 0 with ≥ `MIN_STEP_WORDS` words (the final-answer sentence not counted) that are not a
    repeat of an earlier step, an opener, or the question restated."""
    seen = {_key(ROOT_STEP), _key(question)} | {_key(o) for o in _OPENERS}
    count = 0
    for text in steps[1:]:
        body = FINAL_ANSWER_RE.split(text)[0] if FINAL_ANSWER_RE.search(text) else text
        key = _key(body)
        if len(key.split()) >= MIN_STEP_WORDS and key not in seen and not any(key in s for s in seen if len(s) > 40):
            count += 1
        seen.add(key)
    return count


def check_eligible(candidate: Candidate, question: str = "") -> tuple[bool, str]:
    """Whether ``candidate`` may compete, and why not (guard a)."""
    if not candidate.parsed.ok:
        return False, f"no valid final answer ({candidate.parsed.reason})"
    substantive = substantive_steps(candidate.steps, question)
    if substantive < MIN_SUBSTANTIVE_STEPS:
        return False, (f"{substantive} substantive reasoning step(s); at least {MIN_SUBSTANTIVE_STEPS} are needed "
                       f"(≥ {MIN_STEP_WORDS} words, not a repeat, the opener or the question)")
    return True, ""


@dataclass
class Choice:
    """The chosen answer: ``index`` of the shown candidate (None: nothing eligible), its ``answer``, the rule used,
    the per-answer totals (P-VS sums, or vote counts), the margin and the low-confidence flag with its reason."""

    index: int | None
    answer: str | None
    selection: str
    aggregation: str
    totals: dict[str, float] = field(default_factory=dict)
    margin: float = 0.0
    low_confidence: bool = True
    why: str = ""

    def to_dict(self) -> dict:
        return {"index": self.index, "answer": self.answer, "selection": self.selection,
                "aggregation": self.aggregation, "totals": self.totals, "margin": self.margin,
                "low_confidence": self.low_confidence, "why": self.why}


def majority_vote(candidates: list[Candidate]) -> Choice:
    """The most frequent parsed answer (no PRM); ties go to the answer seen first. Shown by its first candidate,
    or its highest-scored one when scores exist."""
    answers = [c.answer for c in candidates if c.answer is not None]
    if not answers:
        return Choice(None, None, "vote", "-", {}, 0.0, True, "no candidate has a valid final answer")
    counts = Counter(answers)
    order = {a: answers.index(a) for a in counts}
    best = max(counts, key=lambda a: (counts[a], -order[a]))
    members = [i for i, c in enumerate(candidates) if c.answer == best]
    shown = max(members, key=lambda i: (candidates[i].score if candidates[i].score is not None else -1, -i))
    runner = max([v for a, v in counts.items() if a != best], default=0)
    margin = (counts[best] - runner) / len(candidates)
    return Choice(shown, best, "vote", "-", {a: float(v) for a, v in counts.most_common()}, margin,
                  margin < LOW_CONFIDENCE_MARGIN + 1e-9,
                  f"{counts[best]} of {len(candidates)} candidates answer {best}")


def choose(candidates: list[Candidate], selection: str = "best", aggregation: str = "min") -> Choice:
    """Pick the answer from scored candidates (``score``, ``eligible`` set by the caller; see the module doc)."""
    if selection not in SELECTIONS:
        raise ReasoningInputError(f"Unknown selection {selection!r}; use one of {', '.join(SELECTIONS)}.")
    if selection == "vote":
        return majority_vote(candidates)
    ok = [i for i, c in enumerate(candidates) if c.eligible and c.score is not None and c.answer is not None]
    if not ok:
        return Choice(None, None, selection, aggregation, {}, 0.0, True,
                      "no candidate is eligible (each lacks a valid answer or enough real reasoning steps)")
    if selection == "best":
        win = max(ok, key=lambda i: (candidates[i].score, -i))
        answer = candidates[win].answer
        per_answer: dict[str, float] = {}
        for i in ok:
            per_answer[candidates[i].answer] = max(per_answer.get(candidates[i].answer, 0.0), candidates[i].score)
        rival = max([v for a, v in per_answer.items() if a != answer], default=0.0)
        top = candidates[win].score
        why = f"highest {aggregation} step score ({top:.2f}) of {len(ok)} eligible candidates"
    else:  # P-VS: sum of min-scores per answer (the caller scores with min for the reference rule)
        per_answer = {}
        for i in ok:
            per_answer[candidates[i].answer] = per_answer.get(candidates[i].answer, 0.0) + candidates[i].score
        order = {candidates[i].answer: k for k, i in enumerate(ok)}
        answer = max(per_answer, key=lambda a: (per_answer[a], -order[a]))
        win = max((i for i in ok if candidates[i].answer == answer), key=lambda i: (candidates[i].score, -i))
        top = per_answer[answer]
        rival = max([v for a, v in per_answer.items() if a != answer], default=0.0)
        why = (f"largest sum of {aggregation} scores ({top:.2f}) over the "
               f"{sum(candidates[i].answer == answer for i in ok)} eligible candidates answering {answer}")
        top_single = candidates[win].score
    margin = top - rival
    low = margin < LOW_CONFIDENCE_MARGIN or (candidates[win].score or 0.0) < 0.5
    totals = {a: round(v, 4) for a, v in sorted(per_answer.items(), key=lambda kv: -kv[1])}
    return Choice(win, answer, selection, aggregation, totals, round(margin, 4), low, why)
