"""The one prompt template of the reasoning chat, used verbatim by generation, self-evolution, PRM training and eval.

MedS3 used four different prompts (SFT, MCTS, evaluation and PRM each had their own system prompt; reference §9.6),
so the PRM scored text laid out unlike anything it was trained on. Here every stage builds its messages with
`build_messages` and its response with `format_steps`:

    system:    SYSTEM_PROMPT
    user:      INSTRUCTION + "\\n\\n" + question (options inline, "A. ...")
    assistant: "Step 0: Let's break down this problem step by step.\\n\\nStep 1: ...\\n\\nStep k: ... The answer is X."

Generation is *prefilled* with ``Step 0`` and ``"\\n\\nStep 1:"`` (`response_prefix`), so even a small model that
ignores instructions writes in the step format; `split_steps` turns any text back into steps (a text without step
markers becomes a single step, never a crash).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from models.errors import ReasoningInputError

__all__ = ["SYSTEM_PROMPT", "INSTRUCTION", "ROOT_STEP", "MAX_QUESTION_CHARS", "PreparedQuestion", "prepare_question",
           "compose_question",
           "build_messages", "format_steps", "response_prefix", "split_steps", "chatml_prompt", "ANSWER_STEP_RE"]

SYSTEM_PROMPT = "You are a helpful medical assistant. Reason step by step and end with one final answer."
INSTRUCTION = ("Answer the medical question below. Think step by step, writing each step as \"Step k: ...\", "
               "and finish the last step with \"The answer is X.\" where X is the letter of one option "
               "(or a short phrase when there are no options).")
ROOT_STEP = "Let's break down this problem step by step."
MAX_QUESTION_CHARS = 4000  # longer questions are cut (the user is told); the 135M model has a 8k-token context
ANSWER_STEP_RE = re.compile(r"the answer is", re.IGNORECASE)
_STEP_MARK = re.compile(r"(?:^|\n)[ \t]*Step\s+(\d+)[ \t]*:[ \t]*", re.IGNORECASE)


@dataclass(frozen=True)
class PreparedQuestion:
    """A question ready for the template: stripped, possibly truncated (``truncated`` says so, with the lengths)."""

    text: str
    truncated: bool
    original_chars: int

    @property
    def notice(self) -> str | None:
        """What the user is told when the question was cut, else None."""
        if not self.truncated:
            return None
        return (f"The question was {self.original_chars} characters long; only the first {len(self.text)} "
                f"were used (limit {MAX_QUESTION_CHARS}).")


def prepare_question(question: str, max_chars: int = MAX_QUESTION_CHARS) -> PreparedQuestion:
    """Strip ``question`` and cut it to ``max_chars`` (keeping the option lines at its end when there are any).

    Raises:
        ReasoningInputError: the question is not text, or empty after stripping.
    """
    if not isinstance(question, str):
        raise ReasoningInputError(f"The question must be text, got {type(question).__name__}.")
    text = question.replace("\r\n", "\n").strip()
    if not text:
        raise ReasoningInputError("The question is empty: type a question (options such as \"A. ...\" optional).")
    if len(text) <= max_chars:
        return PreparedQuestion(text, False, len(text))
    lines = text.split("\n")
    options = [ln for ln in lines if re.match(r"^\s*[A-Z][.)]\s+\S", ln)]
    tail = "\n".join(options)
    if options and len(tail) < max_chars // 2:  # keep the options: the answer must stay an option letter
        head = text[: max_chars - len(tail) - 2].rstrip()
        cut = head + "…\n" + tail
    else:
        cut = text[: max_chars - 1].rstrip() + "…"
    return PreparedQuestion(cut, True, len(text))


def compose_question(question: str, options: str = "") -> str:
    """The question with options appended as ``A. ...`` lines; ``options`` is one option per line, with or
    without its letter ("Vitamin C" or "B. Vitamin C"). Empty ``options``: the question as given.

    Raises:
        ReasoningInputError: more than 26 options, or a single option (a choice needs two).
    """
    lines = [ln.strip() for ln in (options or "").splitlines() if ln.strip()]
    if not lines:
        return question
    if len(lines) == 1 or len(lines) > 26:
        raise ReasoningInputError(f"Give between 2 and 26 options (one per line), got {len(lines)}.")
    body = [re.sub(r"^\(?[A-Za-z][.):]\s+", "", ln) for ln in lines]
    return question.rstrip() + "\n" + "\n".join(f"{chr(65 + i)}. {t}" for i, t in enumerate(body))


def build_messages(question: str) -> list[dict[str, str]]:
    """The chat messages (system + user) for ``question``; the assistant turn is the response (prefilled)."""
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"{INSTRUCTION}\n\n{question}"}]


def format_steps(steps: list[str], next_step: bool = False) -> str:
    """``"Step 0: s0\\n\\nStep 1: s1 ..."``; with ``next_step`` the header of the following step is appended."""
    text = "\n\n".join(f"Step {i}: {s}" for i, s in enumerate(steps))
    if next_step:
        text += f"\n\nStep {len(steps)}:"
    return text


def response_prefix(steps: list[str] | None = None) -> str:
    """The assistant prefill: the root step (and any given steps), then the next step's header."""
    return format_steps([ROOT_STEP, *(steps or [])], next_step=True)


def split_steps(response: str) -> list[str]:
    """The steps of a response, Step 0 included when present, each stripped; markers ``Step k:`` removed.

    Text before the first marker becomes a step of its own; a response with no marker is one step. Empty steps are
    kept as ``""`` (so the guards can see and punish them) except a trailing empty one.
    """
    text = response.replace("\r\n", "\n").strip()
    if not text:
        return []
    marks = list(_STEP_MARK.finditer(text))
    if not marks:
        return [text]
    steps = []
    if text[: marks[0].start()].strip():
        steps.append(text[: marks[0].start()].strip())
    for m, nxt in zip(marks, marks[1:] + [None]):
        steps.append(text[m.end(): nxt.start() if nxt else len(text)].strip())
    while steps and not steps[-1]:
        steps.pop()
    return steps


def chatml_prompt(messages: list[dict[str, str]], prefill: str = "") -> str:
    """A ChatML prompt (SmolLM2's chat format) ending in the assistant turn started with ``prefill``."""
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return body + "<|im_start|>assistant\n" + prefill
