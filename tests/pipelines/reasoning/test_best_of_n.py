"""Aggregation, P-VS, majority vote, the eligibility guard and the low-confidence flag (synthetic scores)."""

import math

import pytest

from models.errors import ReasoningInputError
from pipelines.reasoning.answers import parse_answer
from pipelines.reasoning.backends import Generation
from pipelines.reasoning.best_of_n import aggregate, check_eligible, choose, majority_vote
from pipelines.reasoning.candidates import finish_response, make_candidate
from pipelines.reasoning.template import response_prefix

OPTS = {"A": "Vitamin A", "B": "Vitamin C", "C": "Vitamin D"}
Q = "Which vitamin deficiency causes scurvy?\nA. Vitamin A\nB. Vitamin C\nC. Vitamin D"
REAL = (" Scurvy results from a lack of ascorbic acid in the diet.\n\nStep 2: Ascorbic acid is another name for "
        "vitamin C, needed for collagen synthesis.\n\nStep 3: The answer is {}.")


def cand(text: str, scores: list[float] | None = None, agg: str = "min"):
    c = make_candidate(response_prefix(), Generation(text, "stop", 10), OPTS)
    c.eligible, c.why_ineligible = check_eligible(c, Q)
    if scores is not None:
        c.step_scores, c.score = scores, aggregate(scores, agg)
    return c


@pytest.mark.parametrize("how, value", [("min", 0.2), ("last", 0.9), ("mean", 0.5), ("prod", 0.4 * 0.2 * 0.9)])
def test_aggregations(how, value):
    assert math.isclose(aggregate([0.4, 0.2, 0.9], how), value)


def test_aggregation_of_no_steps_is_zero_and_unknown_is_an_error():
    assert aggregate([], "min") == 0.0
    with pytest.raises(ReasoningInputError, match="Unknown aggregation"):
        aggregate([0.5], "sum")


def test_response_is_cut_after_its_first_answer():
    assert finish_response("Step 1: x. The answer is B.\nStep 2: The answer is C.") == "Step 1: x. The answer is B."
    c = cand(REAL.format("B") + " More text.\n\nStep 4: The answer is A.")
    assert c.answer == "B" and c.steps[0].startswith("Let's break down")


@pytest.mark.parametrize("text, why", [
    (" The answer is B.", "substantive"),                                 # bare answer
    (" Thought process:\n\nStep 2: The answer is B.", "substantive"),     # opener stub
    (" Let's solve this problem step by step.\n\nStep 2: The answer is B.", "substantive"),
    (" .\n\nStep 2: :\n\nStep 3: The answer is B.", "substantive"),        # punctuation steps
    (" Scurvy results from a lack of ascorbic acid in the diet.\n\nStep 2: Scurvy results from a lack of ascorbic "
     "acid in the diet.\n\nStep 3: The answer is B.", "substantive"),     # a repeat is not a second step
    (REAL.format("B or C"), "no valid final answer"),
    (" Scurvy is a disease of sailors long at sea.", "no valid final answer"),  # truncated, no answer
])
def test_degenerate_candidates_are_not_eligible(text, why):
    ok, reason = check_eligible(cand(text), Q)
    assert not ok and why in reason


def test_best_picks_the_highest_eligible_score_and_never_a_degenerate_one():
    cands = [cand(" The answer is C.", [0.99]),                  # degenerate, even with a perfect PRM score
             cand(REAL.format("B"), [0.8, 0.7, 0.9]),
             cand(REAL.format("A"), [0.9, 0.3, 0.95])]
    choice = choose(cands, "best", "min")
    assert choice.index == 1 and choice.answer == "B"
    assert choice.totals == {"B": 0.7, "A": 0.3} and not choice.low_confidence
    for c in cands:
        c.score = aggregate(c.step_scores, "last")
    assert choose(cands, "best", "last").answer == "A"  # 'last' trusts the final step only


def test_pvs_sums_min_scores_per_answer():
    cands = [cand(REAL.format("A"), [0.9, 0.9, 0.9]), cand(REAL.format("B"), [0.6, 0.6, 0.6]),
             cand(REAL.format("B"), [0.5, 0.5, 0.5])]
    assert choose(cands, "best", "min").answer == "A"
    pvs = choose(cands, "pvs", "min")
    assert pvs.answer == "B" and pvs.index == 1 and math.isclose(pvs.totals["B"], 1.1)


def test_majority_vote_and_ties():
    cands = [cand(REAL.format("A")), cand(REAL.format("B")), cand(REAL.format("B")), cand(" no answer")]
    v = majority_vote(cands)
    assert v.answer == "B" and v.totals == {"B": 2.0, "A": 1.0}
    tie = majority_vote([cand(REAL.format("C")), cand(REAL.format("A"))])
    assert tie.answer == "C" and tie.low_confidence  # first seen wins a tie, flagged


def test_nothing_eligible_gives_no_answer_and_low_confidence():
    choice = choose([cand(" The answer is B.", [0.9])], "best", "min")
    assert choice.answer is None and choice.index is None and choice.low_confidence


def test_small_margin_is_low_confidence():
    cands = [cand(REAL.format("A"), [0.71, 0.8, 0.9]), cand(REAL.format("B"), [0.7, 0.8, 0.9])]
    assert choose(cands, "best", "min").low_confidence
    assert parse_answer(cands[0].response, OPTS).answer == "A"
