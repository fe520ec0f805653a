"""Writing evaluation and benchmark reports: the machine they ran on, strict JSON, and a model card's section.

A report is a JSON-safe dict (`pipelines.worldmodel.metrics.json_safe`); `write_report` writes it atomically and
`update_card_section` replaces (or appends) one ``## <heading>`` section of a ``MODEL_CARD.md``, leaving the rest of
the card as its author wrote it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import shlex
import sys
from pathlib import Path
from typing import Any

from pipelines.worldmodel.metrics import json_safe

__all__ = ["machine_info", "peak_rss_mb", "command_line", "write_report", "update_card_section", "metric_entry"]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; ``ru_maxrss`` is in KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def machine_info() -> dict[str, Any]:
    """Where a figure was measured: platform, processor, CPU count, torch version and threads, GPU if any."""
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def display_path(path: Any) -> str:
    """``path`` relative to the working directory when it lies below it (cards and reports stay portable)."""
    p = Path(str(path)).expanduser()
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def command_line(*words: Any, **options: Any) -> str:
    """A shell-quoted ``mewm`` command: ``words`` then ``--option value`` for each option that is not ``None``.

    Path values are shown relative to the working directory when they lie below it.
    """
    parts = ["mewm", *(str(w) for w in words)]
    for name, value in options.items():
        if value is not None:
            parts += [f"--{name.replace('_', '-')}", display_path(value) if isinstance(value, Path) else str(value)]
    return shlex.join(parts)


def metric_entry(value: float, target: str | None = None, baseline: float | None = None,
                 **details: Any) -> dict[str, Any]:
    """One metric of a report: value, target (``">= 2"``/``"<= 0.70"``), pass/fail, the baseline's value, details.

    ``pass`` is ``None`` without a target or when the value is undefined (``nan``).
    """
    passed = None
    if target is not None and value == value:
        op, threshold = target.split()
        passed = bool(value >= float(threshold)) if op == ">=" else bool(value <= float(threshold))
    return {"value": value, "target": target, "pass": passed, "baseline": baseline, **details}


def write_report(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``report`` as strict JSON (non-finite numbers become ``null``) to ``path``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_safe(report), indent=2, sort_keys=True, allow_nan=False) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def update_card_section(card: str | os.PathLike, heading: str, body: str) -> Path:
    """Replace the ``## {heading}`` section of the model card ``card`` with ``body`` (append it if absent).

    The section runs to the next ``## `` heading or the end of the file. A missing card is created with a title.
    """
    card = Path(card)
    text = card.read_text() if card.is_file() else f"# {card.parent.name} model card\n"
    section = f"## {heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    card.parent.mkdir(parents=True, exist_ok=True)
    tmp = card.with_name(f".{card.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, card)
    return card
