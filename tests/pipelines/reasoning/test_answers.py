"""Strict answer parsing: the reference verifier's known failures (reference §1, §8) are handled."""

import pytest

from pipelines.reasoning.answers import is_correct, normalise_open, parse_answer, parse_options

Q = ("Which antibiotic is first-line for early Lyme disease?\nA. Amoxicillin\nB. Vancomycin\nC. Doxycycline\n"
     "D. Dapsone")
OPTS = parse_options(Q)


def test_options_are_parsed_in_order():
    assert OPTS == {"A": "Amoxicillin", "B": "Vancomycin", "C": "Doxycycline", "D": "Dapsone"}
    assert parse_options("Is it true?\nB. cereus is a bacterium") == {}  # a stray line is no option set
    assert parse_options("x\nA) yes\nB) no") == {"A": "yes", "B": "no"}


@pytest.mark.parametrize("text, letter", [
    ("The answer is C.", "C"),
    ("The answer is (C).", "C"),   # the reference's false negative
    ("The answer is C)", "C"),
    ("The answer is **C**.", "C"),
    ("The answer is [C]", "C"),
    ("The answer is Option C.", "C"),
    ("The answer is: C", "C"),
    ("the correct answer is c) Doxycycline".replace("c)", "C)"), "C"),
    ("The answer is Doxycycline.", "C"),  # full option text → its letter, not the first character (D)
    ("The answer is doxycycline", "C"),
    ("The answer is C. Doxycycline", "C"),
    ("The answer is C because it covers Borrelia.", "C"),
    ("Step 1: ...\n\nStep 2: The final answer is A.", "A"),
])
def test_accepted_forms_map_to_the_letter(text, letter):
    parsed = parse_answer(text, OPTS)
    assert parsed.answer == letter, parsed.reason


@pytest.mark.parametrize("text, reason", [
    ("I think it is C.", "no final answer"),
    ("The answer is A or C.", "hedged"),
    ("The answer is A and C.", "hedged"),
    ("The answer is A/C", "hedged"),
    ("The answer is E.", "not one of the options"),
    ("The answer is AC.", "neither"),
    ("The answer is Dicloxacillin.", "neither"),  # starts with D but is no option: the reference's false positive
    ("The answer is C. Dapsone", "text of option D"),  # letter and another option's text disagree
    ("The answer is A. The answer is C.", "2 final answers"),
    ("The answer is A.\nStep 3: The answer is A.", "2 final answers"),  # exactly one final answer
    ("The answer is .", "empty"),
    ("", "no final answer"),
])
def test_rejected_forms_are_no_answer(text, reason):
    parsed = parse_answer(text, OPTS)
    assert parsed.answer is None
    assert reason in parsed.reason


def test_open_answers_match_exactly_or_by_alias():
    p = parse_answer("The answer is 10 mg/kg.")
    assert p.answer == "10 mg/kg" and is_correct(p, "10 mg/kg")
    assert is_correct(parse_answer("The answer is High."), "high")
    assert is_correct(parse_answer("The answer is the high dose"), "high", aliases=("high dose",))
    assert not is_correct(parse_answer("The answer is 10 mg/kg/day"), "10 mg/kg")  # no substring credit
    assert parse_answer("The answer is 10 mg/kg or 20 mg/kg").answer is None  # hedged: the reference passed it
    assert parse_answer("The answer is 5 mg; 10 mg").answer is None
    assert parse_answer("The answer is " + "very " * 20 + "high").answer is None  # over-long
    assert normalise_open("  The  High dose. ") == "high dose"


def test_mcq_correctness_is_by_letter():
    assert is_correct(parse_answer("The answer is (C)", OPTS), "C")
    assert not is_correct(parse_answer("The answer is Dicloxacillin", OPTS), "D")
    assert not is_correct(parse_answer("no answer", OPTS), "C")
