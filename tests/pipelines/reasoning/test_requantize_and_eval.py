"""The Q8_0 copy of the embedded GGUF is the same model within Q8_0 rounding; `evaluate` caches, resumes, scores the
same candidates for every method and refuses a cache made by another policy."""

import json

import numpy as np
import pytest

from models.errors import ReasoningInputError
from pipelines.reasoning.backends import Generation, SmolLM2Backend, smollm2_gguf_path
from pipelines.reasoning.data import split_of
from pipelines.reasoning.evaluate import evaluate
from pipelines.reasoning.requantize import smollm2_q8_0_path


def test_q8_0_copy_holds_the_same_weights_within_rounding():
    import gguf
    from gguf import GGMLQuantizationType as QT

    src, dst = gguf.GGUFReader(str(smollm2_gguf_path())), gguf.GGUFReader(str(smollm2_q8_0_path()))
    assert [t.name for t in src.tensors] == [t.name for t in dst.tensors]
    assert {t.tensor_type for t in dst.tensors} <= {QT.Q8_0, QT.F32}
    for name in ("blk.0.attn_q.weight", "blk.29.ffn_down.weight"):
        a = gguf.quants.dequantize(next(t for t in src.tensors if t.name == name).data, QT.Q4_1)
        b = gguf.quants.dequantize(next(t for t in dst.tensors if t.name == name).data, QT.Q8_0)
        blocks = np.abs(a).reshape(-1, 32).max(axis=1, keepdims=True)
        assert a.shape == b.shape
        assert np.all(np.abs(a - b).reshape(-1, 32) <= blocks / 127 * 0.5 + 1e-3 * blocks + 1e-7)
    assert smollm2_q8_0_path() == smollm2_q8_0_path()  # made once, then reused


def test_unknown_smollm2_weights_are_refused():
    with pytest.raises(ReasoningInputError, match="q8_0"):
        SmolLM2Backend(weights="q2")


class _Echo:
    """Answers B with two reasoning steps when sampling, A (no reasoning) when greedy; counts calls."""

    name = "scripted"

    def __init__(self, model="echo-1"):
        self.model, self.calls = model, 0

    def complete(self, question, prefixes, *, n=1, temperature=0.8, top_p=0.95, max_new_tokens=256, seed=0,
                 stop=None):
        self.calls += 1
        text = (" Scurvy is caused by a lack of vitamin C.\n\nStep 2: Vitamin C is needed for collagen.\n\n"
                "Step 3: The answer is B." if temperature > 0 else " The answer is A.")
        return [[Generation(text, "stop", 20) for _ in range(n)] for _ in prefixes]


class _Flat:
    name = "flat"

    def score(self, question, responses, options):
        return [[0.9] * (len(r) - 1) for r in responses]


def test_eval_caches_resumes_and_refuses_another_policys_cache(tmp_path):
    dev = [str(i) for i in range(200) if split_of("toy", str(i)) == "dev"][:3]
    data = [{"id": i, "conversations": [{"from": "human", "value": "Which vitamin prevents scurvy?\nA. Vitamin A\n"
                                                                     "B. Vitamin C"}], "eval": {"answer": "B"}}
            for i in dev]
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(data))
    backend = _Echo()
    report = evaluate([path], backend, _Flat(), tmp_path / "ev" / "evaluation.json", n=4, limit=2)
    m = report["files"]["toy"]["metrics"]
    assert report["files"]["toy"]["items"] == 2 and backend.calls == 4  # greedy + N samples per item
    assert m["greedy"]["accuracy"] == 0.0 and m["majority"]["accuracy"] == 1.0 and m["prm_best_min"]["correct"] == 2
    evaluate([path], backend, _Flat(), tmp_path / "ev" / "evaluation.json", n=4, limit=3)
    assert backend.calls == 6  # the two cached items are not generated again
    with pytest.raises(ReasoningInputError, match="another --out"):
        evaluate([path], _Echo("echo-2"), _Flat(), tmp_path / "ev" / "evaluation.json", n=4, limit=3)


def test_greedy_only_eval_needs_no_prm(tmp_path):
    dev = [str(i) for i in range(200) if split_of("toy", str(i)) == "dev"][:2]
    path = tmp_path / "toy.json"
    path.write_text(json.dumps([{"id": i, "conversations": [{"from": "human", "value": "Q?\nA. x\nB. y"}],
                                 "eval": {"answer": "A"}} for i in dev]))
    backend = _Echo()
    report = evaluate([path], backend, None, tmp_path / "g" / "evaluation.json", n=0, limit=2)
    assert backend.calls == 2 and report["files"]["toy"]["metrics"]["greedy"]["accuracy"] == 1.0
    assert set(report["files"]["toy"]["metrics"]) == {"greedy"}
    with pytest.raises(ReasoningInputError, match="card"):
        evaluate([path], backend, None, tmp_path / "g" / "evaluation.json", n=0, limit=2, card_dir=tmp_path)


def test_llama_rows_permuted_back_to_the_order_transformers_undoes():
    from pipelines.reasoning.requantize import _llama_permute

    w = np.random.default_rng(0).normal(size=(3 * 2 * 4, 5)).astype(np.float32)  # 3 heads of dim 8
    back = w.reshape(3, 4, 2, 5).swapaxes(2, 1).reshape(w.shape)  # transformers' _reverse_permute_weights
    assert np.array_equal(back, w) is False and np.array_equal(_llama_permute(back, 3), w)


def test_export_gguf_of_a_missing_folder_names_the_command(tmp_path):
    from models.errors import CheckpointNotFoundError
    from pipelines.reasoning.requantize import hf_llama_to_gguf

    with pytest.raises(CheckpointNotFoundError, match="train-policy"):
        hf_llama_to_gguf(tmp_path / "none", tmp_path / "x.gguf")
