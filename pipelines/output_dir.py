"""New output folders that are never half-written: fill a temporary sibling, then rename it into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from models.errors import ConfigError

__all__ = ["new_output_dir"]


@contextmanager
def new_output_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it becomes ``out``, on error it is removed.

    Raises:
        ConfigError: ``out`` exists and is not empty (results are never mixed or overwritten).
    """
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not empty; choose a new output folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
