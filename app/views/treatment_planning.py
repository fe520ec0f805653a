"""Treatment Planning: the policy proposes agents, the world model simulates each candidate plan, the survival model
scores it, and the plans are ranked, lowest predicted risk first."""

import streamlit as st

from app import resources
from app.components.open_case import require_case_with_tumour
from app.components.planning_view import planning_view, proposal_view, search_controls
from app.errors import shown_errors

st.title("Treatment Planning")
st.warning("Research use only — not for clinical use. Plans are ranked by research models (the embedded defaults "
           "were trained on a synthetic cohort); they must not guide the treatment of any patient.",
           icon=":material/science:")
case = require_case_with_tumour("plan for")

config = resources.planning_config()
world = survival = None
with shown_errors("loading the world model"):
    world = resources.world_model(resources.world_model_dir())
with shown_errors("loading the survival model"):
    survival = resources.survival_model(config.planning.survival_dir)
if world is None or survival is None:
    st.stop()

source = st.session_state["mewm.case_source"]
backend = config.policy.backend
st.header("1. Policy proposal")
stored = st.session_state["mewm.proposal"]
proposal = stored[2] if stored is not None and stored[0] == source and stored[1] == backend else None
if st.button(f"Ask the {backend} policy", key="planning.propose", type="primary" if proposal is None else "secondary"):
    with shown_errors(f"asking the {backend} policy"), st.spinner("Asking the policy…"):
        proposal = resources.policy(backend, config).propose(case)
        st.session_state["mewm.proposal"] = (source, backend, proposal)
        st.session_state["mewm.planning"] = None
if proposal is None:
    st.caption(f"The configured policy backend is `{backend}` (`[policy] backend` in the config).")
    st.stop()
proposal_view(proposal)

st.header("2. Search")
settings = search_controls(config.planning)
if st.button("Search plans", type="primary", key="planning.run"):
    from pipelines.planning.search import plan_case

    bar = st.progress(0.0, text="Searching…")
    with shown_errors("searching plans"):
        p = config.planning
        result = plan_case(case, world, survival, proposal, mode=settings.mode, samples=settings.samples,
                           seed=settings.seed, steps=settings.steps, guidance=p.guidance, beams=settings.beams,
                           drug_horizon=p.drug_horizon, embolic_horizon=p.embolic_horizon,
                           progress=lambda done, total, message: bar.progress(min(1.0, done / total),
                                                                              text=message))
        st.session_state["mewm.planning"] = (source, result)
    bar.empty()

stored = st.session_state["mewm.planning"]
if stored is not None and stored[0] == source:
    st.header("3. Result")
    planning_view(stored[1])
