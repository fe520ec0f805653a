"""The one test that loads the real embedded SmolLM2 GGUF (llama.cpp): N candidates in one call, seeded, greedy."""

from pipelines.reasoning.backends import SmolLM2Backend, smollm2_gguf_path
from pipelines.reasoning.candidates import sample_candidates
from pipelines.reasoning.template import response_prefix

Q = "Which vitamin deficiency causes scurvy?\nA. Vitamin A\nB. Vitamin C\nC. Vitamin D"


def test_embedded_model_samples_n_candidates_in_one_call():
    assert smollm2_gguf_path().suffix == ".gguf"
    be = SmolLM2Backend(n_parallel=4, n_ctx=4096)
    prefixes = [response_prefix(), response_prefix(["Scurvy is a deficiency disease."])]
    out = be.complete(Q, prefixes, n=2, max_new_tokens=12, seed=3)
    assert [len(g) for g in out] == [2, 2]
    assert all(1 <= g.tokens <= 12 for gs in out for g in gs)  # exact token counts from llama.cpp
    again = be.complete(Q, prefixes, n=2, max_new_tokens=12, seed=3)
    assert [[g.text for g in gs] for gs in again] == [[g.text for g in gs] for gs in out]  # same call, same samples
    cands = sample_candidates(be, Q, {"A": "Vitamin A", "B": "Vitamin C", "C": "Vitamin D"}, n=2,
                              temperature=0.0, max_new_tokens=12)
    assert cands[0].response == cands[1].response and cands[0].steps[0].startswith("Let's break down")
