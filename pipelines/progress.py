"""Progress reporting without a UI dependency: a `ProgressFn` callback, and a tqdm bar for the command line.

Long-running `pipelines` functions take ``progress: bool | ProgressFn | None``: ``True`` draws a tqdm bar on stderr,
a callable is called as ``progress(done, total, message)`` (the app passes one that moves a Streamlit bar), and
``None``/``False`` reports nothing. `pipelines` never imports streamlit.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ProgressFn", "TqdmProgress", "resolve_progress"]

ProgressFn = Callable[[int, int, str], None]


class TqdmProgress:
    """A `ProgressFn` that draws a tqdm bar, created on the first call and closed when ``done >= total`` (a later
    call starts a new bar)."""

    def __init__(self, desc: str, unit: str = "it") -> None:
        self.desc, self.unit = desc, unit
        self._bar = None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=total, initial=done, desc=self.desc, unit=self.unit)
        self._bar.update(done - self._bar.n)
        if message:
            self._bar.set_postfix_str(message, refresh=False)
        if done >= total:
            self._bar.close()
            self._bar = None


def resolve_progress(progress: bool | ProgressFn | None, desc: str, unit: str = "it") -> ProgressFn | None:
    """``True`` → a `TqdmProgress`; a callable → itself; ``None``/``False`` → ``None``."""
    if progress is True:
        return TqdmProgress(desc, unit)
    if not progress:
        return None
    if not callable(progress):
        raise TypeError(f"progress must be a bool or a callable(done, total, message), got {progress!r}.")
    return progress
