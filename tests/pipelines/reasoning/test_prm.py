"""PRM scorers on tiny random models: step 0 is never scored, batched rows are scored as themselves, the head's
causal mask holds, training runs end to end on a toy trees file, and missing PRMs are typed errors."""

import json

import pytest
import torch

from models.errors import CheckpointNotFoundError, ReasoningInputError
from models.prm import StepValueHead
from pipelines.reasoning.prm import (MiniLMStepScorer, TokenClassificationScorer, _Encoder, display_steps, load_prm,
                                     step_features)
from pipelines.reasoning.template import ROOT_STEP
from pipelines.reasoning.train_prm import (adversarial_examples, dual_sided_targets, examples_from_trees,
                                           held_out_questions)

Q = "Which vitamin deficiency causes scurvy?\nA. Vitamin A\nB. Vitamin C\nC. Vitamin D"
OPTS = {"A": "Vitamin A", "B": "Vitamin C", "C": "Vitamin D"}
R1 = [ROOT_STEP, "Scurvy is caused by a lack of vitamin C.", "The answer is B."]
R2 = [ROOT_STEP, "Vitamin A.", "Vitamin D.", "The answer is A."]


def test_head_is_causal_and_validates_shapes():
    torch.manual_seed(0)
    head = StepValueHead(embed_dim=8, n_features=6, width=16, layers=1, heads=2, max_steps=6).eval()
    q, s, f = torch.randn(1, 8), torch.randn(1, 5, 8), torch.randn(1, 5, 6)
    m = torch.ones(1, 5, dtype=torch.bool)
    full = head(q, s, f, m)
    s2 = s.clone()
    s2[0, 4] = torch.randn(8)  # change the last step only
    assert torch.allclose(full[0, :4], head(q, s2, f, m)[0, :4], atol=1e-5)  # earlier steps do not see it
    assert not torch.allclose(full[0, 4], head(q, s2, f, m)[0, 4])
    with pytest.raises(ValueError, match="max_steps"):
        head(q, torch.randn(1, 7, 8), torch.randn(1, 7, 6), torch.ones(1, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible"):
        StepValueHead(width=10, heads=4)


def test_minilm_scorer_scores_steps_1_to_n_per_row(tiny_encoder):
    torch.manual_seed(0)
    enc = _Encoder(tiny_encoder)
    head = StepValueHead(embed_dim=enc.dim, n_features=6, width=16, layers=1, heads=2)
    scorer = MiniLMStepScorer(head, enc)
    both = scorer.score(Q, [R1, R2], OPTS)
    assert [len(s) for s in both] == [2, 3]  # step 0 excluded
    assert all(0.0 <= p <= 1.0 for s in both for p in s)
    alone = scorer.score(Q, [R2], OPTS)  # padding in a batch does not change a row's scores
    assert alone[0] == pytest.approx(both[1], abs=1e-5)
    assert scorer.score(Q, [], OPTS) == [] and len(scorer.score(Q, [[ROOT_STEP]], OPTS)[0]) == 0


def test_answer_step_shows_its_option_text_and_features():
    assert display_steps(R1, OPTS)[-1] == "The answer is B. [Vitamin C]"
    feats = step_features(["", "The answer is B."], OPTS)
    assert feats[0][1] == 1.0 and feats[1][2] == 1.0 and feats[1][3] == 1.0 and feats[1][4] == 1.0


def test_token_classification_prm_reads_each_row_at_its_step_ends(tiny_token_prm):
    torch.set_num_threads(1)
    scorer = TokenClassificationScorer(tiny_token_prm)
    ids, ends = scorer.layout(Q, R1)
    assert len(ends) == 3 and ends[-1] == len(ids) - 1
    both = scorer.score(Q, [R1, R2], OPTS)
    assert [len(s) for s in both] == [2, 3]
    assert scorer.score(Q, [R2], OPTS)[0] == pytest.approx(both[1], abs=1e-4)  # row 1, not row 0 (reference bug)
    assert isinstance(load_prm(tiny_token_prm), TokenClassificationScorer)


def test_missing_prm_names_the_command(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="mewm reasoning train-prm"):
        load_prm(tmp_path)


def test_dual_sided_targets_and_adversarial_negatives():
    assert dual_sided_targets([0.5, 0.5, 0.25, 1.0]) == [0.0, 0.5, 0.0, 1.0]  # a drop is pushed to 0, clipped
    import random

    adv = adversarial_examples(Q, OPTS, "B", [[s, 0.5, 0.5] for s in R2], "q", random.Random(0))
    kinds = {e.source for e in adv}
    assert {"adv-opener", "adv-thought", "adv-bare", "adv-empty", "adv-punct", "adv-truncated",
            "adv-repeat"} <= kinds
    bare = next(e for e in adv if e.source == "adv-bare")
    assert bare.steps == [ROOT_STEP, "The answer is B."] and bare.targets == [0.0, 0.0]  # gold letter, still 0


def _tree(dataset, qid, reasoned=True):
    chain = [[ROOT_STEP, 0.5, 0.5], ["Scurvy is caused by a lack of vitamin C.", 0.75, 0.66],
             ["Vitamin C is needed to make collagen in gums and skin.", 0.8, 0.7], ["The answer is B.", 1.0, 1.0]]
    if not reasoned:
        chain = [chain[0], chain[-1]]
    return {"id": qid, "dataset": dataset, "question": Q, "answer": "B", "pos": [[chain, 1.0]], "neg": []}


def test_trees_of_dev_questions_are_refused(tmp_path):
    from pipelines.reasoning.data import split_of

    dev = next(str(i) for i in range(100) if split_of("toy", str(i)) == "dev")
    train = next(str(i) for i in range(100) if split_of("toy", str(i)) == "train")
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps(_tree("toy", train)) + "\n")
    examples, summary = examples_from_trees([ok])
    assert summary["tree-pos"] == 1 and summary["questions"] == 1 and len(examples) > 5
    lucky = tmp_path / "lucky.jsonl"  # a right letter with no reasoning is relabelled 0
    lucky.write_text(json.dumps(_tree("toy", train, reasoned=False)) + "\n")
    examples, summary = examples_from_trees([lucky])
    assert summary.get("tree-pos-unreasoned") == 1 and "tree-pos" not in summary
    assert all(t == 0.0 for e in examples if e.source == "tree-pos-unreasoned" for t in e.targets)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_tree("toy", dev)) + "\n")
    with pytest.raises(ReasoningInputError, match="dev split"):
        examples_from_trees([bad])


def test_validation_questions_are_held_out_whenever_there_are_two():
    assert held_out_questions(["a"]) == set()
    held = held_out_questions([f"q{i}" for i in range(12)] * 3)
    assert len(held) == 1 and held == held_out_questions([f"q{i}" for i in reversed(range(12))])
    assert len(held_out_questions([f"q{i}" for i in range(40)])) == 4
