"""From a backend's continuation to a candidate answer: the full response, its steps and its parsed final answer.

A response ends at the end of the line holding its first "The answer is" (the equivalent of a stop string: what a
model writes after it has answered is not part of the answer, and a response that keeps answering would otherwise be
"several answers"). Generation is one batched call for all N candidates (`sample_candidates`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.reasoning.answers import FINAL_ANSWER_RE, ParsedAnswer, parse_answer
from pipelines.reasoning.backends import Generation, PolicyBackend
from pipelines.reasoning.template import response_prefix, split_steps

__all__ = ["Candidate", "finish_response", "make_candidate", "sample_candidates"]


@dataclass
class Candidate:
    """One sampled answer. ``steps[0]`` is Step 0 (the opener, never scored); ``step_scores`` are filled by a PRM."""

    response: str
    steps: list[str]
    parsed: ParsedAnswer
    tokens: int
    finish_reason: str
    step_scores: list[float] = field(default_factory=list)  # one per step 1..n (step 0 excluded)
    score: float | None = None  # the aggregate used for ranking (None: not eligible / not scored)
    eligible: bool = True
    why_ineligible: str = ""

    @property
    def answer(self) -> str | None:
        return self.parsed.answer

    def to_dict(self) -> dict:
        return {"response": self.response, "steps": self.steps, "answer": self.parsed.answer,
                "parse_error": self.parsed.reason, "tokens": self.tokens, "finish_reason": self.finish_reason,
                "step_scores": self.step_scores, "score": self.score, "eligible": self.eligible,
                "why_ineligible": self.why_ineligible}


def finish_response(text: str) -> str:
    """``text`` cut at the end of the line holding its first final-answer sentence (unchanged if none)."""
    m = FINAL_ANSWER_RE.search(text)
    return text[: m.end()].rstrip() if m else text.rstrip()


def make_candidate(prefix: str, generation: Generation, options: dict[str, str]) -> Candidate:
    """The candidate for ``prefix`` + ``generation.text``."""
    response = finish_response(prefix + generation.text)
    steps = split_steps(response)
    return Candidate(response, steps, parse_answer(response, options), generation.tokens, generation.finish_reason)


def sample_candidates(backend: PolicyBackend, question: str, options: dict[str, str], *, n: int,
                      temperature: float = 0.8, top_p: float = 0.95, max_new_tokens: int = 256,
                      seed: int = 0) -> list[Candidate]:
    """``n`` candidates for ``question`` in one batched backend call (``temperature`` 0: greedy)."""
    prefix = response_prefix()
    gens = backend.complete(question, [prefix], n=n, temperature=temperature, top_p=top_p,
                            max_new_tokens=max_new_tokens, seed=seed)[0]
    return [make_candidate(prefix, g, options) for g in gens]
