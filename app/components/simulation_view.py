"""Widgets of the Simulate page: plan entry (validated as you type), sampling controls, and the result view
(pre vs post slices on the same window, a slider over samples, the volume-change chart and table)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.components.before_after import before_after
from models.errors import PlanValidationError
from models.plan import Plan
from pipelines.config import DEFAULT_STEPS
from pipelines.worldmodel.simulate import STRUCTURES, SimulationResult
from pipelines.worldmodel.weights import SAMPLER_NAMES

__all__ = ["SamplingSettings", "plan_inputs", "sampling_controls", "simulation_view", "volume_change_figure",
           "volume_change_frame"]

N_SUGGESTED_DEFAULT = 2  # suggestions selected when the page first opens
RESPONSE_LABELS = {"viable": "viable", "necrosis": "necrosis", "lipiodol": "Lipiodol"}  # models.response targets


@dataclass(frozen=True)
class SamplingSettings:
    samples: int
    steps: int
    guidance: float
    seed: int


def plan_inputs(suggestions: list[str]) -> list[Plan]:
    """A free-text plan (validated as you type) plus suggested plans; the valid plans, without repeats."""
    chosen = st.multiselect("Suggested plans", suggestions, default=suggestions[:N_SUGGESTED_DEFAULT],
                            key="simulate.suggested", help="Plans of the virtual cohort's practice catalogue.")
    text = st.text_input("Your plan", key="simulate.plan_text", placeholder="e.g. Lobaplatin; Epirubicin; Lipiodol",
                         help="Agents separated by ';', optionally with doses ('Epirubicin 30 mg').")
    plans = [Plan.parse(p) for p in chosen]
    if text.strip():
        try:
            typed = Plan.parse(text)
        except PlanValidationError as e:
            st.error(f"Not a valid plan: {e}", icon=":material/block:")
        else:
            st.success(f"Plan understood as: {typed.canonical()} ({typed.protocol.value})",
                       icon=":material/check_circle:")
            plans.append(typed)
    unique: dict[str, Plan] = {}
    for plan in plans:
        unique.setdefault(plan.canonical(), plan)
    return list(unique.values())


def sampling_controls() -> SamplingSettings:
    c1, c2, c3, c4 = st.columns(4)
    samples = c1.number_input("Samples per plan", 1, 32, 3, key="simulate.samples",
                              help="Simulations per plan; results are shown as mean ± sd over them.")
    steps = c2.number_input("Denoising steps", 1, 200, DEFAULT_STEPS, key="simulate.steps")
    guidance = c3.number_input("Guidance", 0.0, 10.0, 2.0, 0.5, key="simulate.guidance",
                               help="Classifier-free guidance: 1 = the plan-conditioned model alone, higher "
                                    "follows the plan more strongly, 0 ignores it.")
    seed = c4.number_input("Seed", 0, 2**31 - 1, 0, key="simulate.seed", help="Same seed, same simulation.")
    return SamplingSettings(int(samples), int(steps), float(guidance), int(seed))


def volume_change_frame(result: SimulationResult) -> pd.DataFrame:
    """One row per plan: mean ± sd volume change (ml) of each structure, and the mean viable volume."""
    rows = []
    for sim in result.plans:
        row = {"Plan": sim.plan.canonical()}
        for name in STRUCTURES:
            s = sim.summary[name]
            sd = f" ± {s.sd_change_ml:.2f}" if math.isfinite(s.sd_change_ml) else ""
            row[f"{name.replace('_', ' ').capitalize()} change (ml)"] = f"{s.mean_change_ml:+.2f}{sd}"
        row["Viable tumour after (ml)"] = round(sim.summary["viable_tumour"].mean_ml, 2)
        if sim.response is not None:  # the response predictor's expectation the samples were conditioned on
            for target, label in RESPONSE_LABELS.items():
                row[f"Predicted {label} (% of lesion)"] = round(100.0 * sim.response[target], 1)
        rows.append(row)
    return pd.DataFrame(rows)


def volume_change_figure(result: SimulationResult) -> go.Figure:
    """Per plan: a bar of the mean viable-tumour change with ± sd error bars, and each sample as a point."""
    names = [sim.plan.canonical() for sim in result.plans]
    means = [sim.summary["viable_tumour"].mean_change_ml for sim in result.plans]
    sds = [s if math.isfinite(s) else 0.0 for s in (sim.summary["viable_tumour"].sd_change_ml
                                                     for sim in result.plans)]
    fig = go.Figure(go.Bar(x=names, y=means, error_y={"type": "data", "array": sds}, name="mean ± sd",
                           marker_color="#4C78A8"))
    xs = [n for n, sim in zip(names, result.plans) for _ in sim.changes["viable_tumour"]]
    ys = [float(v) for sim in result.plans for v in sim.changes["viable_tumour"]]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name="samples", marker={"color": "#F58518", "size": 8}))
    fig.update_layout(yaxis_title="Viable tumour change (ml)", xaxis_title=None, height=380,
                      margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend={"orientation": "h"})
    return fig


def _slices(result: SimulationResult, plan_index: int, sample: int) -> None:
    sim = result.plans[plan_index]
    before_after(result.pre_hu, result.pre_labels, sim.crops_hu[sample], sim.labels[sample], result.crop,
                 f"After {sim.plan.canonical()}: sample {sample + 1} (simulated)", key="simulate")


def simulation_view(result: SimulationResult) -> None:
    """Pre vs post slices for a chosen plan and sample, then the volume-change chart and table."""
    for note in (result.crop_note, result.clinical_note):
        if note:
            st.warning(note, icon=":material/warning:")
    names = [sim.plan.canonical() for sim in result.plans]
    c1, c2 = st.columns(2)
    plan_index = names.index(c1.selectbox("Plan shown", names, key="simulate.show_plan"))
    sample = 0
    if result.samples > 1:
        sample = c2.slider("Sample", 1, result.samples, 1, key="simulate.sample") - 1
    _slices(result, plan_index, sample)
    st.subheader("Volume change from the pre-treatment crop")
    st.plotly_chart(volume_change_figure(result), key="simulate.chart")
    st.dataframe(volume_change_frame(result), hide_index=True)
    token = "" if result.response_guidance is None else f" (response token {result.response_guidance:g})"
    st.caption(f"{result.samples} sample(s) per plan, seed {result.seed}, {result.steps} "
               f"{SAMPLER_NAMES.get(result.sampler, result.sampler)} steps, guidance "
               f"{result.guidance:g}{token}, {result.precision}; {result.denoiser_passes} denoiser calls, "
               f"{result.seconds:.1f} s. Voxels "
               f"outside the change region (tumour + margin, within the liver) are the pre-treatment CT.")
