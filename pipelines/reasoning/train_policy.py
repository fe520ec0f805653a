"""`mewm reasoning train-policy`: LoRA fine-tuning (peft) of the policy on the correct self-evolution paths.

Data (reference §3): every ``pos`` path of the trees (train split only), as the *same* template the policy is
prompted with (`template.build_messages` + the steps joined as ``"Step i: ..."``), loss on the assistant tokens only
(the reference left TRL's default, which also trains on the prompt). Examples longer than ``max_tokens`` are dropped.
LoRA r 16, α 32 on q/k/v/o/gate/up/down (the released MedS3 adapter's settings), AdamW, one example per step,
seeded. The adapter is merged and the model saved as a plain causal-LM directory (no GGUF quantisation config), so
``--backend hf --model-dir OUT`` runs it; the adapter alone is saved under ``OUT/adapter``.

The base default is SmolLM2-135M-Instruct dequantised from the embedded GGUF (transformers + gguf; no hub).
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from models.errors import ReasoningInputError
from pipelines.progress import resolve_progress
from pipelines.reasoning.data import train_tree_records
from pipelines.reasoning.template import build_messages, format_steps

__all__ = ["PolicyReport", "sft_examples", "train_policy", "LORA_TARGETS"]

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class PolicyReport:
    out: str
    examples: int
    dropped: int
    steps: int
    first_loss: float
    last_loss: float
    seconds: float

    def summary(self) -> str:
        return (f"LoRA policy: {self.steps} steps on {self.examples} correct paths ({self.dropped} too long, "
                f"dropped); loss {self.first_loss:.3f} → {self.last_loss:.3f} (mean of the first / last 10 steps) "
                f"in {self.seconds:.0f} s. Merged model in {self.out} (use --backend hf --model-dir {self.out}).")


def sft_examples(trees: list[str | os.PathLike]) -> list[tuple[str, str]]:
    """(question, response) for every correct path of the trees; dev-split questions are refused."""
    out = []
    for _path, rec in train_tree_records(trees, "policy fine-tuning"):
        for chain, _ in rec["pos"]:
            out.append((rec["question"], format_steps([str(s[0]) for s in chain])))
    if not out:
        raise ReasoningInputError("The trees hold no correct path to fine-tune on; evolve more questions.")
    return out


def _load_base(base: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if base:
        return (AutoTokenizer.from_pretrained(base, local_files_only=True),
                AutoModelForCausalLM.from_pretrained(base, local_files_only=True))
    from pipelines.reasoning.backends import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    return tok, model


def train_policy(trees: list[str | os.PathLike], out: str | os.PathLike, *, base: str | None = None,
                 steps: int = 30, lr: float = 2e-4, rank: int = 16, seed: int = 0, max_tokens: int = 512,
                 progress=True) -> PolicyReport:
    """Fine-tune (see the module docstring) and save the merged model, the adapter and ``training.json``."""
    import torch
    from peft import LoraConfig, get_peft_model

    # 1. data
    pairs = sft_examples(trees)
    tok, model = _load_base(base)
    encoded, dropped = [], 0
    for question, response in pairs:
        prompt = tok.apply_chat_template(build_messages(question), add_generation_prompt=True, tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        r_ids = tok(response + (tok.eos_token or ""), add_special_tokens=False)["input_ids"]
        if len(p_ids) + len(r_ids) > max_tokens:
            dropped += 1
            continue
        encoded.append((p_ids, r_ids))
    if not encoded:
        raise ReasoningInputError(f"Every correct path is longer than --max-tokens {max_tokens}.")
    # 2. LoRA
    torch.manual_seed(seed)
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                             target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    bar = resolve_progress(progress, "train policy", "step")
    losses = []
    t0 = time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        p_ids, r_ids = encoded[rng.randrange(len(encoded))]
        ids = torch.tensor([p_ids + r_ids])
        labels = torch.tensor([[-100] * len(p_ids) + r_ids])  # assistant tokens only
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if bar:
            bar(step, steps, f"loss {loss.item():.3f}")
    # 3. save: adapter, then the merged plain model
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out / "adapter")
    merged = model.merge_and_unload()
    if getattr(merged.config, "quantization_config", None) is not None:  # loaded from GGUF: save a plain copy
        cfg = merged.config.to_dict()
        cfg.pop("quantization_config", None)
        plain = type(merged)(type(merged.config).from_dict(cfg))
        plain.load_state_dict(merged.state_dict())
        merged = plain
    merged.save_pretrained(out)
    tok.save_pretrained(out)
    report = PolicyReport(str(out), len(encoded), dropped, steps, sum(losses[:10]) / len(losses[:10]),
                          sum(losses[-10:]) / len(losses[-10:]), time.perf_counter() - t0)
    (out / "training.json").write_text(json.dumps({**report.__dict__, "lr": lr, "rank": rank, "seed": seed,
                                                   "base": base or "SmolLM2-135M-Instruct (embedded GGUF)",
                                                   "trees": [str(t) for t in trees], "losses": losses}, indent=2))
    return report
