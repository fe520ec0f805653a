"""The ``hf`` policy: a local Hugging Face vision-language checkpoint directory (Qwen2-VL style).

Same prompt, images, validation and retries as the ``openai`` backend (`pipelines.policy.prompt`,
`pipelines.policy.validate`); generation is greedy, so a fixed checkpoint gives a fixed proposal. Nothing is ever
downloaded: the directory must hold everything (``local_files_only=True``).

Inputs are built by the checkpoint's ``AutoProcessor`` when it loads. Qwen2-VL's processor also needs its video
processor, which needs torchvision, which does not install beside this project's CPU torch; then the backend builds
the same inputs from the checkpoint's own tokenizer (chat template) and image processor, as ``Qwen2VLProcessor`` does
for images: each image placeholder becomes ``prod(image_grid_thw) / merge_size²`` image tokens, with
``mm_token_type_ids`` marking them for M-RoPE. Which path ran is recorded in ``Proposal.details["inputs"]``.
"""

from __future__ import annotations

import io
import typing
from pathlib import Path
from typing import Any

from models.errors import CheckpointNotFoundError, ConfigError, PolicyError
from pipelines.case import Case
from pipelines.policy.base import Proposal
from pipelines.policy.prompt import SYSTEM_PROMPT, user_text
from pipelines.policy.render import render_views
from pipelines.policy.validate import ModelReply, Turn, propose_with_retries

if typing.TYPE_CHECKING:
    from pipelines.config import PolicyConfig

__all__ = ["HFPolicy", "EXPECTED_FILES"]

EXPECTED_FILES = ("config.json", "model weights (*.safetensors or pytorch_model.bin)",
                  "tokenizer files (tokenizer.json / tokenizer_config.json) with a chat template",
                  "preprocessor_config.json (the image processor)")


def _expected() -> str:
    return "; ".join(EXPECTED_FILES)


def check_checkpoint_dir(path: str | Path) -> Path:
    """The directory, if it looks like a vision-language checkpoint; else `CheckpointNotFoundError` saying what is
    expected."""
    d = Path(path).expanduser()
    if not d.is_dir():
        raise CheckpointNotFoundError(
            f"No Hugging Face vision-language checkpoint directory at {d}. Expected a local folder (e.g. a downloaded "
            f"Qwen2-VL-2B-Instruct) holding: {_expected()}. Set [policy] hf_model_dir to it.")
    missing = []
    if not (d / "config.json").is_file():
        missing.append("config.json")
    if not (any(d.glob("*.safetensors")) or any(d.glob("pytorch_model*.bin"))):
        missing.append("model weights (*.safetensors)")
    if not ((d / "tokenizer.json").is_file() or (d / "tokenizer_config.json").is_file()):
        missing.append("tokenizer files")
    if not (d / "preprocessor_config.json").is_file():
        missing.append("preprocessor_config.json")
    if missing:
        raise CheckpointNotFoundError(f"{d} is not a complete vision-language checkpoint: missing "
                                      f"{', '.join(missing)}. Expected: {_expected()}.")
    return d


class HFPolicy:
    """Proposals from a local vision-language checkpoint (loaded at the first proposal, then kept).

    Args:
        model_dir: the checkpoint directory.
        device: ``"cpu"`` or a torch device string (``"cuda"``).
        max_retries: retries after an invalid reply.
        max_new_tokens: generation budget per reply (a valid proposal is about 100-200 tokens).
    """

    name = "hf"

    def __init__(self, model_dir: str | Path, device: str = "cpu", max_retries: int = 3, max_new_tokens: int = 512):
        if int(max_retries) < 0:
            raise ConfigError(f"[policy] max_retries must be >= 0, got {max_retries}.")
        if int(max_new_tokens) < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
        self.model_dir = check_checkpoint_dir(model_dir)
        self.device, self.max_retries, self.max_new_tokens = str(device), int(max_retries), int(max_new_tokens)
        self._loaded: tuple[Any, Any, str] | None = None  # (model, inputs builder, which path)

    @classmethod
    def from_config(cls, cfg: "PolicyConfig") -> "HFPolicy":
        if not str(cfg.hf_model_dir).strip():
            raise ConfigError("[policy] backend = \"hf\" needs [policy] hf_model_dir: a local vision-language "
                              f"checkpoint directory holding {_expected()}.")
        return cls(cfg.hf_model_dir, device=cfg.device, max_retries=cfg.max_retries)

    # -------------------------------------------------------------------------------------------- loading
    def _load(self) -> tuple[Any, Any, str]:
        if self._loaded is not None:
            return self._loaded
        import torch
        from transformers import AutoModelForImageTextToText

        try:
            model = AutoModelForImageTextToText.from_pretrained(
                self.model_dir, local_files_only=True,
                dtype=torch.float32 if self.device == "cpu" else "auto").to(self.device).eval()
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise CheckpointNotFoundError(f"Cannot load a vision-language model from {self.model_dir}: "
                                          f"{type(e).__name__}: {str(e)[:300]}. Expected: {_expected()}.") from e
        builder, path = self._inputs_builder()
        self._loaded = (model, builder, path)
        return self._loaded

    def _inputs_builder(self) -> tuple[Any, str]:
        from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

        try:
            return AutoProcessor.from_pretrained(self.model_dir, local_files_only=True), "AutoProcessor"
        except ImportError as e:
            if "torchvision" not in str(e).lower():
                raise CheckpointNotFoundError(f"Cannot load the processor of {self.model_dir}: {e}") from e
            reason = "AutoProcessor needs torchvision (video processor); tokenizer + image processor"
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            images = AutoImageProcessor.from_pretrained(self.model_dir, local_files_only=True)
        except (OSError, ValueError, KeyError, ImportError) as e:
            raise CheckpointNotFoundError(f"Cannot load the tokenizer or image processor of {self.model_dir}: "
                                          f"{type(e).__name__}: {str(e)[:300]}. Expected: {_expected()}.") from e
        if not getattr(tokenizer, "chat_template", None):
            raise CheckpointNotFoundError(f"The tokenizer of {self.model_dir} has no chat template; an instruction-"
                                          "tuned (chat) vision-language checkpoint is expected.")
        return _ImageTokenInputs(tokenizer, images), reason

    # -------------------------------------------------------------------------------------------- proposal
    def propose(self, case: Case) -> Proposal:
        """Render the case, generate greedily, validate; retries as `propose_with_retries`."""
        from PIL import Image

        model, builder, path = self._load()
        images = [Image.open(io.BytesIO(png)).convert("RGB") for png in render_views(case)]
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": user_text(case)}]
        base = [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
                {"role": "user", "content": content}]

        def ask(history: list[Turn]) -> ModelReply:
            messages = list(base)
            for turn in history:
                messages += [{"role": "assistant", "content": [{"type": "text", "text": turn.reply}]},
                             {"role": "user", "content": [{"type": "text", "text": turn.feedback}]}]
            return ModelReply(text=self._generate(model, builder, messages, images))

        proposal = propose_with_retries(ask, self.name, str(self.model_dir), self.max_retries)
        proposal.details["inputs"] = path
        return proposal

    def _generate(self, model: Any, builder: Any, messages: list[dict], images: list[Any]) -> str:
        import torch

        prompt = builder.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = builder(text=[prompt], images=images, return_tensors="pt")
        inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        tokenizer = getattr(builder, "tokenizer", builder)
        try:
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        except (RuntimeError, ValueError) as e:
            raise PolicyError(f"Generation with {self.model_dir} failed: {type(e).__name__}: {str(e)[:300]}") from e
        new = out[0, inputs["input_ids"].shape[1]:]
        return tokenizer.decode(new, skip_special_tokens=True)


class _ImageTokenInputs:
    """Qwen2-VL-style model inputs from a tokenizer (with a chat template) and an image processor.

    Does for images what ``Qwen2VLProcessor`` does: one ``image_token`` per image in the chat-template text is
    expanded to ``prod(image_grid_thw) // merge_size**2`` tokens, and ``mm_token_type_ids`` is 1 on those tokens.
    """

    def __init__(self, tokenizer: Any, image_processor: Any, image_token: str = "<|image_pad|>"):
        self.tokenizer, self.image_processor, self.image_token = tokenizer, image_processor, image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise CheckpointNotFoundError(f"The tokenizer has no {image_token} token: not a Qwen2-VL-style checkpoint. "
                                          "Install torchvision so AutoProcessor can load this model's own processor.")

    def apply_chat_template(self, messages: list[dict], **kwargs: Any) -> str:
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def __call__(self, text: list[str], images: list[Any], return_tensors: str = "pt") -> dict[str, Any]:
        import torch

        processed = self.image_processor(images=images, return_tensors="pt")
        grid = processed["image_grid_thw"]
        merge = int(getattr(self.image_processor, "merge_size", 2))
        prompt = text[0]
        if prompt.count(self.image_token) != len(images):
            raise PolicyError(f"The chat template placed {prompt.count(self.image_token)} image tokens for "
                              f"{len(images)} images; the checkpoint's template does not fit this backend.")
        pieces = prompt.split(self.image_token)
        expanded = pieces[0]
        for i, rest in enumerate(pieces[1:]):
            expanded += self.image_token * int(grid[i].prod().item() // merge ** 2) + rest
        enc = self.tokenizer([expanded], return_tensors="pt", add_special_tokens=False)
        ids = enc["input_ids"]
        return {"input_ids": ids, "attention_mask": enc["attention_mask"],
                "mm_token_type_ids": (ids == self.image_token_id).to(torch.int32),
                "pixel_values": processed["pixel_values"], "image_grid_thw": grid}
