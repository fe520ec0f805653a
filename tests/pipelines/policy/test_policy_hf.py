"""The `hf` policy with a tiny randomly initialised Qwen2-VL-style checkpoint that the test builds itself."""

from __future__ import annotations

import json

import pytest
from policy_helpers import GOOD_LIVER, make_case
from tiny_vlm import build_tiny_vlm

from models.errors import CheckpointNotFoundError, ConfigError, PolicyReplyError
from models.plan import Plan
from pipelines.config import PolicyConfig
from pipelines.policy import load_policy
from pipelines.policy.hf_backend import HFPolicy

VALID = {"drug_set": ["Epirubicin"], "embolic_set": ["Lipiodol", "Gelatin Sponge"], "protocols": ["cTACE"],
         "preferred_plan": {"agents": ["Epirubicin", "Lipiodol"], "protocol": "cTACE"}, "rationale": "ok"}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"))


@pytest.fixture(scope="module")
def case():
    return make_case(covariates=GOOD_LIVER)


def force_replies(monkeypatch, texts: list[str]) -> list[dict]:
    """Make the real `generate` emit ``texts`` (one per call) through a logits processor; returns the calls."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList, Qwen2VLForConditionalGeneration

    real = Qwen2VLForConditionalGeneration.generate
    calls: list[dict] = []

    class Force(LogitsProcessor):
        def __init__(self, target: list[int], start: int):
            self.target, self.start = target, start

        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - self.start
            forced = torch.full_like(scores, float("-inf"))
            forced[:, self.target[step] if step < len(self.target) else self.eos] = 0.0
            return forced

    def generate(model, **kwargs):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model.name_or_path)
        force = Force(tok(texts[len(calls)], add_special_tokens=False)["input_ids"], kwargs["input_ids"].shape[1])
        force.eos = tok.eos_token_id
        calls.append({"n_images": int(kwargs["image_grid_thw"].shape[0]),
                      "prompt": tok.decode(kwargs["input_ids"][0])})
        kwargs["max_new_tokens"] = 400
        return real(model, logits_processor=LogitsProcessorList([force]), **kwargs)

    monkeypatch.setattr(Qwen2VLForConditionalGeneration, "generate", generate)
    return calls


def test_random_model_runs_and_reports_an_invalid_reply(tiny_dir, case):
    policy = HFPolicy(tiny_dir, max_retries=1, max_new_tokens=16)
    with pytest.raises(PolicyReplyError, match="after 2 attempt") as e:
        policy.propose(case)
    assert e.value.problems and e.value.raw_reply is not None


def test_forced_valid_json_gives_a_proposal_after_a_retry(tiny_dir, case, monkeypatch):
    calls = force_replies(monkeypatch, ["I think epirubicin.", json.dumps(VALID)])
    p = HFPolicy(tiny_dir, max_retries=2).propose(case)
    assert p.backend == "hf" and p.model == str(tiny_dir) and p.attempts == 2
    assert p.preferred == Plan.from_agents(["Epirubicin", "Lipiodol"]) and p.candidate_plans()
    assert json.loads(p.raw_reply) == VALID and "tokenizer + image processor" in p.details["inputs"]
    assert [c["n_images"] for c in calls] == [3, 3]
    assert "Child-Pugh class A" in calls[0]["prompt"] and "not valid JSON" in calls[1]["prompt"]


def test_missing_or_incomplete_checkpoint_names_what_is_expected(tmp_path, tiny_dir):
    with pytest.raises(CheckpointNotFoundError, match="preprocessor_config.json"):
        HFPolicy(tmp_path / "nope")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.json").write_text((tiny_dir / "config.json").read_text())
    with pytest.raises(CheckpointNotFoundError, match="missing model weights"):
        HFPolicy(tmp_path / "partial")
    with pytest.raises(ConfigError, match="hf_model_dir"):
        load_policy(PolicyConfig(backend="hf"))
    assert isinstance(load_policy(PolicyConfig(backend="hf", hf_model_dir=str(tiny_dir))), HFPolicy)
