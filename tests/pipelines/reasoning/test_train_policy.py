"""LoRA fine-tuning on correct tree paths, on a tiny random Llama: runs, saves a loadable merged model."""

import json

import pytest

from models.errors import ReasoningInputError
from pipelines.reasoning.backends import HFBackend
from pipelines.reasoning.train_policy import sft_examples, train_policy
from pipelines.reasoning.template import ROOT_STEP


def _trees(tmp_path, pos=True):
    from pipelines.reasoning.data import split_of

    qid = next(str(i) for i in range(100) if split_of("toy", str(i)) == "train")
    chain = [[ROOT_STEP, 0.5, 0.5], ["Scurvy is vitamin C deficiency.", 0.8, 0.8], ["The answer is B.", 1.0, 1.0]]
    rec = {"id": qid, "dataset": "toy", "question": "Scurvy?\nA. Vitamin A\nB. Vitamin C", "answer": "B",
           "pos": [[chain, 1.0]] if pos else [], "neg": [] if pos else [[chain, 0.0]]}
    path = tmp_path / "trees.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    return path


def test_lora_training_saves_a_model_the_hf_backend_loads(tmp_path, tiny_causal_lm):
    import torch

    torch.set_num_threads(1)
    report = train_policy([_trees(tmp_path)], tmp_path / "policy", base=str(tiny_causal_lm), steps=3, rank=4,
                          progress=False)
    assert report.examples == 1 and report.steps == 3
    assert (tmp_path / "policy" / "adapter" / "adapter_config.json").is_file()
    be = HFBackend(tmp_path / "policy")
    assert len(be.complete("Scurvy?", ["Step 0:"], n=2, max_new_tokens=4)[0]) == 2


def test_no_correct_path_is_an_error(tmp_path):
    assert sft_examples([_trees(tmp_path)])[0][1].startswith("Step 0: ")
    with pytest.raises(ReasoningInputError, match="no correct path"):
        sft_examples([_trees(tmp_path, pos=False)])
