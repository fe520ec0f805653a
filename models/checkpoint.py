"""Save and load a network as a directory: ``config.json`` (its constructor keywords) + ``model.pt`` (state dict).

The constructor is the config: ``build(config)`` must rebuild the network exactly, so a checkpoint made with another
config fails loudly instead of half-loading. Loading is local-only; nothing reaches a model hub.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.errors import CheckpointNotFoundError

__all__ = ["FORMAT_VERSION", "CheckpointMeta", "save_checkpoint", "load_checkpoint", "read_checkpoint_meta"]

FORMAT_VERSION = 1


class CheckpointMeta(dict):
    """The parsed ``config.json``: ``kind``, ``format_version``, ``config`` (constructor keywords), ``extra``."""

    @property
    def config(self) -> dict[str, Any]:
        return self["config"]

    @property
    def extra(self) -> dict[str, Any]:
        return self.get("extra") or {}


def save_checkpoint(directory: str | os.PathLike, model: nn.Module, *, kind: str, config: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` and ``model.pt`` into ``directory`` atomically (other files there are kept).

    Args:
        kind: what the network is (``"autoencoder"``, ``"dynamics"``, ``"segmentation"``); checked on load.
        config: the constructor keywords (JSON-serialisable).
        extra: anything else loading needs (scheduler config, crop geometry, training data summary).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"kind": kind, "format_version": FORMAT_VERSION, "config": config, "extra": extra or {}}
    text = json.dumps(meta, indent=2, sort_keys=True)  # fails here, before anything is written, if not JSON-safe
    with tempfile.TemporaryDirectory(dir=directory, prefix=".saving-") as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(tmp) / "model.pt")
        (Path(tmp) / "config.json").write_text(text + "\n")
        for name in ("model.pt", "config.json"):
            os.replace(Path(tmp) / name, directory / name)
    return directory


def read_checkpoint_meta(directory: str | os.PathLike, *, kind: str, command: str) -> CheckpointMeta:
    """The checkpoint's ``config.json``, checked for ``kind`` and format; errors name ``command``."""
    directory = Path(directory)
    cfg = directory / "config.json"
    if not cfg.is_file() or not (directory / "model.pt").is_file():
        raise CheckpointNotFoundError(f"No {kind} checkpoint in {directory} (config.json and model.pt are needed). "
                                      f"Make one with `{command}`.")
    try:
        meta = CheckpointMeta(json.loads(cfg.read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointNotFoundError(f"The {kind} checkpoint's {cfg} is not readable JSON ({e}). "
                                      f"Re-make it with `{command}`.") from e
    if meta.get("kind") != kind:
        raise CheckpointNotFoundError(f"{directory} holds a checkpoint of kind {meta.get('kind')!r}, not {kind!r}. "
                                      f"Point to the {kind} weights, or make them with `{command}`.")
    if meta.get("format_version") != FORMAT_VERSION or not isinstance(meta.get("config"), dict):
        raise CheckpointNotFoundError(f"The {kind} checkpoint in {directory} has format version "
                                      f"{meta.get('format_version')!r}; this version reads {FORMAT_VERSION}. "
                                      f"Re-make it with `{command}`.")
    return meta


def load_checkpoint(directory: str | os.PathLike, *, kind: str, build: Callable[[dict[str, Any]], nn.Module],
                    command: str) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the network from ``config.json`` with ``build`` and load ``model.pt`` strictly, in eval mode.

    Raises:
        CheckpointNotFoundError: missing files, another kind or format, or weights that do not fit the config
            (e.g. a checkpoint from another configuration); the message names ``command``, which makes a new one.
    """
    directory = Path(directory)
    meta = read_checkpoint_meta(directory, kind=kind, command=command)
    try:
        model = build(meta.config)
    except (TypeError, ValueError) as e:
        raise CheckpointNotFoundError(f"The {kind} checkpoint in {directory} has a config this version cannot build "
                                      f"({e}). Re-make it with `{command}`.") from e
    try:
        state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise CheckpointNotFoundError(f"The {kind} weights in {directory} do not fit its config (incompatible or "
                                      f"corrupt checkpoint: {str(e).splitlines()[0]}). "
                                      f"Re-make it with `{command}`.") from e
    model.eval()
    return model, meta


