"""How the app shows errors: the project's typed errors in plain words, anything else as a generic message.

No traceback ever reaches the user. Unexpected errors are logged with their type and stack frames only; the
exception message is not logged, because it may carry an uploaded file's name or other identifying text.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from models.errors import MeWMError

__all__ = ["GENERIC_ERROR", "describe", "shown_errors"]

log = logging.getLogger("mewm.app")

GENERIC_ERROR = (
    "Something unexpected went wrong while {action}. The details were written to the server log; "
    "please report the problem to the MeWM Workbench maintainers."
)


def describe(error: Exception, action: str) -> str:
    """The message the user sees for ``error`` raised while doing ``action`` (logging unexpected ones)."""
    if isinstance(error, MeWMError):
        return str(error)
    frames = "".join(traceback.format_tb(error.__traceback__))
    log.error("Unexpected %s while %s (message withheld: may identify a patient)\n%s",
              type(error).__name__, action, frames)
    return GENERIC_ERROR.format(action=action)


@contextmanager
def shown_errors(action: str) -> Iterator[None]:
    """Run a block; an error inside it becomes an ``st.error`` and the rest of the page still renders.

    Streamlit's own control flow (``st.rerun``, ``st.stop``) derives from BaseException and passes through.
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 - the UI boundary: every error becomes a plain message
        st.error(describe(e, action))
