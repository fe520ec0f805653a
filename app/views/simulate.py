"""Simulate: the post-TACE tumour of the open case under chosen plans, as mean ± sd over several samples."""

import streamlit as st

from app import resources
from app.components.open_case import require_case_with_tumour
from app.components.simulation_view import plan_inputs, sampling_controls, simulation_view
from app.errors import shown_errors

st.title("Simulate")
st.caption("Research use only: simulated outcomes of a model trained on synthetic data, not predictions for "
           "a patient.")
case = require_case_with_tumour("simulate")

world = None
with shown_errors("loading the world model"):
    world = resources.world_model(resources.world_model_dir())
if world is None:
    st.stop()

plans = plan_inputs(resources.suggested_plans())
settings = sampling_controls()
source = st.session_state["mewm.case_source"]
if st.button("Simulate", type="primary", key="simulate.run", disabled=not plans,
             help=None if plans else "Choose or type at least one valid plan."):
    bar = st.progress(0.0, text="Simulating…")
    with shown_errors("simulating"):
        result = world.simulate(case, plans, samples=settings.samples, seed=settings.seed, steps=settings.steps,
                                guidance=settings.guidance,
                                progress=lambda done, total, message: bar.progress(done / total, text=message))
        st.session_state["mewm.simulation"] = (source, result)
    bar.empty()

last = st.session_state["mewm.simulation"]
if last is not None and last[0] == source:
    with shown_errors("showing the simulation"):
        simulation_view(last[1])
