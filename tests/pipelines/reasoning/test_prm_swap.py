"""Correctness beyond the guards, on the shipped PRM: over a small fixed set of hand-written correct paths
(`swap_cases`), the correct path scores above the same path with its final letter swapped to each wrong option.

Measured on the shipped head before this test was written (prm trained with --consistency-data, 2026-11-27):
15 of 24 pairs won on the min-score, mean min-score margin +0.002, mean answer-step margin +0.46. The min-score
margin is small because the head scores every first step low (its trees are mostly wrong paths); the answer step is
where the swap shows."""

import statistics
from pathlib import Path

import pytest

from pipelines.reasoning.answers import parse_options
from pipelines.reasoning.best_of_n import aggregate
from pipelines.reasoning.prm import load_prm
from pipelines.reasoning.train_prm import with_final_answer

from swap_cases import SWAP_CASES  # noqa: E402 (tests dir on sys.path, see conftest)

WEIGHTS = Path(__file__).resolve().parents[3] / "models" / "weights" / "prm"


@pytest.fixture(scope="module")
def scores():
    import torch

    torch.set_num_threads(1)
    prm = load_prm(WEIGHTS)
    out = []
    for question, steps, gold in SWAP_CASES:
        options = parse_options(question)
        wrong = [with_final_answer(steps, w) for w in options if w != gold]
        out.append(prm.score(question, [with_final_answer(steps, gold)] + wrong, options))
    return out


def test_correct_path_beats_the_same_path_with_the_final_letter_swapped(scores):
    answer_margins = [s[0][-1] - statistics.mean(x[-1] for x in s[1:]) for s in scores]
    min_margins = [aggregate(s[0], "min") - statistics.mean(aggregate(x, "min") for x in s[1:]) for s in scores]
    won = sum(aggregate(s[0], "min") > aggregate(x, "min") for s in scores for x in s[1:])
    pairs = sum(len(s) - 1 for s in scores)
    assert statistics.mean(answer_margins) > 0.3, answer_margins
    assert statistics.mean(min_margins) > 0, min_margins
    assert won / pairs >= 0.5, (won, pairs)


def test_final_answer_rewrite_keeps_the_reasoning():
    steps = ["opener", "Scurvy is a lack of vitamin C.", "So the vitamin is C.\n\nThe correct answer is B. Vitamin C"]
    assert with_final_answer(steps, "A") == steps[:2] + ["So the vitamin is C.\n\nThe answer is A."]
    assert with_final_answer(["opener", "no answer here"], "A") is None


def test_consistency_pairs_label_only_the_answer_step_and_keep_the_guards():
    import math
    import random

    from pipelines.reasoning.data import QAItem
    from pipelines.reasoning.train_prm import consistency_examples

    item = QAItem("7", "Which vitamin prevents scurvy?\nA. Vitamin A\nB. Vitamin C", "B", "toy",
                  {"A": "Vitamin A", "B": "Vitamin C"})
    ex = {e.source: e for e in consistency_examples([item], random.Random(0))}
    gold, swapped = ex["consistency-gold"], ex["consistency-swapped"]
    assert gold.steps[:-1] == swapped.steps[:-1] and "Vitamin C" in gold.steps[2]
    assert gold.steps[-1] == "The answer is B." and swapped.steps[-1] == "The answer is A."
    assert gold.targets[-1] == 1.0 and swapped.targets[-1] == 0.0
    assert all(math.isnan(t) for t in gold.targets[1:-1])  # template steps are not judged
    assert ex["adv-bare"].targets == [0.0, 0.0]
