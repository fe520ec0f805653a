"""Strict answer parsing and verification: one final "The answer is X." whose X maps to exactly one option.

MedS3's rule verifier (reference §1, §8) takes the *first character* of the last "The answer is" match, so "(D)" is a
false negative and "Doxycycline" counts as option D whatever option it really is; its open-answer check is a
substring test, so "10 mg/kg or 20 mg/kg" passes. Both kinds of error leak into the PRM's labels. Here:

- exactly one final-answer sentence ("The answer is", "The correct answer is", "The final answer is"); zero or
  several is no answer (a response that keeps answering is not an answer);
- for questions with options: ``(A)``, ``A)``, ``A.``, ``**A**``, ``[A]``, ``Option A``, ``Choice A`` and the full text
  of an option all map to its letter; a letter outside the option set, "A or C", "A and C", "A/C", two letters, or a
  letter followed by *another* option's text is no answer;
- for open questions: the answer is normalised (case, articles, spaces, outer punctuation) and must equal the gold
  answer or one of its aliases exactly; hedged ("x or y", "x; y") or over-long answers (> `MAX_OPEN_WORDS` words)
  are no answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ParsedAnswer", "parse_options", "parse_answer", "is_correct", "normalise_open", "MAX_OPEN_WORDS",
           "FINAL_ANSWER_RE"]

MAX_OPEN_WORDS = 12
FINAL_ANSWER_RE = re.compile(r"\bthe\s+(?:correct\s+|final\s+|right\s+)?answer\s+is\b[ \t]*:?[ \t]*"
                             r"(?P<rest>(?:(?!\bthe\s+(?:correct\s+|final\s+|right\s+)?answer\s+is\b)[^\n])*)",
                             re.IGNORECASE)
_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])[.):]\s+(\S.*?)\s*$")
_PREFIX_WORDS = re.compile(r"^(?:option|choice|answer|letter)\s*:?\s*", re.IGNORECASE)
_HEDGE_LETTERS = re.compile(r"^\(?[A-Z]\)?\s*(?:,|/|&|\bor\b|\band\b|\band/or\b)\s*\(?[A-Z]\b", re.IGNORECASE)
_LETTER_FIRST = re.compile(r"^[(\[]?([A-Z])(?:[)\]]|(?=[.:,;\s-])|$)(?P<rest>.*)$", re.DOTALL)


@dataclass(frozen=True)
class ParsedAnswer:
    """The parsed final answer: ``answer`` is an option letter, a normalised open answer, or None with ``reason``."""

    answer: str | None
    reason: str = ""
    raw: str = ""

    @property
    def ok(self) -> bool:
        return self.answer is not None


def parse_options(question: str) -> dict[str, str]:
    """Options written inline as lines ``A. text`` / ``A) text``: letter → text, in order; {} when there are none.

    Only a run of consecutive letters starting at A counts (a stray "B. cereus" line alone is not an option set).
    """
    found: dict[str, str] = {}
    for line in question.splitlines():
        m = _OPTION_LINE.match(line)
        if m and m.group(1) == chr(ord("A") + len(found)):
            found[m.group(1)] = m.group(2)
        elif m and m.group(1) == "A":  # a second option list restarts the set
            found = {"A": m.group(2)}
    return found if len(found) >= 2 else {}


def _clean(text: str) -> str:
    """Strip emphasis, quotes, outer brackets-free punctuation and spaces."""
    text = text.replace("*", "").replace("`", "").replace("\u201c", "").replace("\u201d", "")
    text = text.strip().strip("\"'").strip()
    return text.rstrip(".").strip()


def normalise_open(text: str) -> str:
    """Lower case, articles and outer punctuation dropped, spaces collapsed (inner "." and "/" kept: "2.5 mg/kg")."""
    text = _clean(text).lower()
    text = re.sub(r"^(?:the|a|an)\s+", "", text)
    text = re.sub(r"\s+", " ", text)
    return text.strip(" ,;:!?()[]\"'.")


def _option_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def parse_answer(response: str, options: dict[str, str] | None = None) -> ParsedAnswer:
    """The single final answer of ``response`` (see the module docstring for the rules)."""
    matches = list(FINAL_ANSWER_RE.finditer(response or ""))
    if not matches:
        return ParsedAnswer(None, "no final answer (\"The answer is X.\")")
    if len(matches) > 1:
        return ParsedAnswer(None, f"{len(matches)} final answers; exactly one is required", matches[-1]["rest"])
    raw = matches[0]["rest"]
    text = _clean(raw)
    text = _PREFIX_WORDS.sub("", text).strip()
    if not text:
        return ParsedAnswer(None, "the final answer is empty", raw)
    if options:
        return _parse_choice(text, options, raw)
    if re.search(r"\bor\b|;|\band/or\b", text, re.IGNORECASE):
        return ParsedAnswer(None, "hedged answer (several alternatives)", raw)
    answer = normalise_open(text)
    if not answer:
        return ParsedAnswer(None, "the final answer is empty", raw)
    if len(answer.split()) > MAX_OPEN_WORDS:
        return ParsedAnswer(None, f"open answer longer than {MAX_OPEN_WORDS} words", raw)
    return ParsedAnswer(answer, "", raw)


def _parse_choice(text: str, options: dict[str, str], raw: str) -> ParsedAnswer:
    if _HEDGE_LETTERS.match(text):
        return ParsedAnswer(None, "hedged answer (several options)", raw)
    by_text = {_option_key(v): k for k, v in options.items()}
    key = _option_key(text)
    if key in by_text:  # the full option text ("Doxycycline" is the letter of Doxycycline, whatever it starts with)
        return ParsedAnswer(by_text[key], "", raw)
    m = _LETTER_FIRST.match(text)
    if not m:
        return ParsedAnswer(None, "the final answer is neither an option letter nor an option's text", raw)
    letter, rest = m.group(1).upper(), _option_key(m.group("rest"))
    if letter not in options:
        return ParsedAnswer(None, f"{letter} is not one of the options {', '.join(options)}", raw)
    if rest and rest != _option_key(options[letter]):
        others = [k for k, v in options.items() if k != letter and _option_key(v) and
                  (rest == _option_key(v) or rest.startswith(_option_key(v) + " "))]
        if others:
            return ParsedAnswer(None, f"letter {letter} followed by the text of option {others[0]}", raw)
        if re.match(r"^(?:or|and)\b", rest):
            return ParsedAnswer(None, "hedged answer (several options)", raw)
    return ParsedAnswer(letter, "", raw)


def is_correct(parsed: ParsedAnswer, gold: str, aliases: tuple[str, ...] = ()) -> bool:
    """Whether ``parsed`` equals ``gold`` (an option letter, or an open answer / one of its ``aliases``)."""
    if parsed.answer is None:
        return False
    if len(gold.strip()) == 1 and gold.strip().isalpha():
        return parsed.answer == gold.strip().upper()
    golds = {normalise_open(g) for g in (gold, *aliases)}
    return parsed.answer in golds
