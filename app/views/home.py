"""Home: what MeWM Workbench does, the research-only disclaimer, and which models are installed."""

import pandas as pd
import streamlit as st

from app.frame import DISCLAIMER
from pipelines.status import models_status

st.title("MeWM Workbench")
st.warning(DISCLAIMER, icon=":material/warning:")
st.markdown(
    """
A medical world model for planning **transarterial chemoembolisation (TACE)** of hepatocellular carcinoma.
For one patient's CT it:

1. **Policy** — proposes candidate TACE plans (drugs and embolics) from the tumour burden, liver function and the
   Action Base rules;
2. **Dynamics** — simulates the post-TACE CT each plan would produce;
3. **Inverse dynamics** — segments the simulated tumour and estimates the survival risk it implies;
4. **Plan ranking** — orders the plans by predicted risk (mean ± spread over several simulations).

It also offers a **reasoning chat** (a small language model whose answers are scored step by step),
**Turing tests** (readers tell real from simulated post-TACE CT), and **batch scoring** of whole cohorts.
Open a case in the **Case Viewer** to begin.
"""
)
st.subheader("Models")
rows = models_status()
st.dataframe(
    pd.DataFrame([{"Model": r.name, "Role": r.role, "Status": r.status,
                   "How to install": "" if r.installed else r.how_to_install} for r in rows]),
    hide_index=True,
)
if not all(r.installed for r in rows):
    st.caption("Models marked “not yet installed” are not available in this installation; "
               "features that need them say so instead of guessing.")
