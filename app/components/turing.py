"""Shared pieces of the Turing-test pages: session keys, the admin passcode gate, the study picker.

Session keys (``turing.*``, initialised in `init_turing_state`):
- ``turing.reader``: the signed-in reader (`ReaderLogin`), or None;
- ``turing.shown``: ``(token, monotonic time)`` of the item on screen, for its reading time (restarts after a
  browser refresh, so a paused session does not count the pause);
- ``turing.notice``: a one-off message for the reader (e.g. an answer that another tab already gave);
- ``turing.admin``: whether this browser session has given the admin passcode;
- ``turing.new_code``: the access code just made, shown once to the admin.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

__all__ = ["RESEARCH_ONLY", "TURING_DEFAULTS", "init_turing_state", "study_store", "admin_gate", "study_picker",
           "turing_page"]

RESEARCH_ONLY = ("Research use only — not for clinical use. This reader study measures how realistic simulated "
                 "images look; it says nothing about any patient.")

TURING_DEFAULTS: dict[str, Any] = {
    "turing.reader": None,
    "turing.shown": None,
    "turing.notice": None,
    "turing.admin": False,
    "turing.new_code": None,
}


def init_turing_state() -> None:
    for key, value in TURING_DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value


def study_store():
    """The configured `StudyStore` (cheap: `pipelines.db` keeps one engine per database URL)."""
    from pipelines.turing.store import StudyStore

    return StudyStore.from_config()


def admin_gate() -> bool:
    """Ask for the admin passcode once per browser session; True when given. Locked without a configured one."""
    from models.errors import AccessDeniedError
    from pipelines.config import load_config
    from pipelines.turing.access import ADMIN_LOCKED, check_admin_passcode

    init_turing_state()
    configured = load_config().study.admin_passcode
    if not configured:
        st.error(ADMIN_LOCKED, icon=":material/lock:")
        return False
    if st.session_state["turing.admin"]:
        return True
    with st.form("turing.admin_login"):
        typed = st.text_input("Admin passcode", type="password", key="turing.admin_passcode")
        submitted = st.form_submit_button("Unlock")
    if submitted:
        try:
            check_admin_passcode(typed, configured)
        except AccessDeniedError as e:
            time.sleep(1.0)  # slows guessing from one session
            st.error(str(e))
            return False
        st.session_state["turing.admin"] = True
        st.rerun()
    return False


def study_picker(store, key: str):
    """A select box of the studies (newest first); returns the chosen `StudySummary`, or None without studies."""
    studies = store.studies()
    if not studies:
        st.info("No study yet. Set one up on the Turing admin page.")
        return None
    labels = {s.id: f"#{s.id} {s.name} ({s.status}; {s.real} real + {s.synthetic} synthetic)" for s in studies}
    chosen = st.selectbox("Study", list(labels), format_func=labels.get, key=key)
    return next(s for s in studies if s.id == chosen)


def turing_page(title: str, admin: bool):
    """The top of every Turing-test page: state, title, research-only notice, the admin gate (``admin``), and the
    study store; stops the page (with the reason shown) when the gate is closed or the database cannot be opened."""
    from app.errors import shown_errors

    init_turing_state()
    st.title(title)
    st.caption(RESEARCH_ONLY)
    if admin and not admin_gate():
        st.stop()
    store = None
    with shown_errors("opening the study database"):
        store = study_store()
    if store is None:
        st.stop()
    return store
