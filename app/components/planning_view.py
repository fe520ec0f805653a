"""Widgets of the Treatment Planning page: the policy's proposal, search settings, and the ranked result (table,
survival curves on one plot, pre vs simulated post slices for any plan, downloads for the tumour board)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.components.before_after import before_after

__all__ = ["SearchSettings", "proposal_view", "search_controls", "ranked_frame", "survival_curves_figure",
           "planning_view"]


@dataclass(frozen=True)
class SearchSettings:
    mode: str
    samples: int
    steps: int
    beams: int
    seed: int


def proposal_view(proposal) -> None:
    """Backend, model, proposed agents and protocols, the policy's own preferred plan and its rationale."""
    st.markdown(f"**Backend:** `{proposal.backend}` · **model:** {proposal.model}")
    c1, c2, c3 = st.columns(3)
    c1.markdown("**Drugs**\n\n" + ("\n".join(f"- {d}" for d in proposal.drugs) or "none (bland only)"))
    c2.markdown("**Embolics**\n\n" + "\n".join(f"- {e}" for e in proposal.embolics))
    c3.markdown("**Protocols**\n\n" + "\n".join(f"- {p.value}" for p in proposal.protocols))
    if proposal.preferred is not None:
        st.markdown(f"**The policy's own choice:** {proposal.preferred.canonical()}")
    st.info(proposal.rationale, icon=":material/lightbulb:")


def search_controls(defaults) -> SearchSettings:
    """Search settings, defaulting to the ``[planning]`` config."""
    c1, c2, c3, c4, c5 = st.columns(5)
    modes = ["beam", "exhaustive"]
    mode = c1.selectbox("Search", modes, index=modes.index(defaults.mode) if defaults.mode in modes else 0,
                        key="planning.mode", help="beam: the reference beam search over the proposed agents; "
                                                  "exhaustive: every admissible combination of them.")
    samples = c2.number_input("Samples per plan", 1, 16, int(defaults.samples), key="planning.samples",
                              help="Simulated outcomes per plan; the risk is their mean ± sd.")
    steps = c3.number_input("Denoising steps", 1, 200, int(defaults.steps), key="planning.steps")
    beams = c4.number_input("Beams", 1, 20, int(defaults.beams), key="planning.beams")
    seed = c5.number_input("Seed", 0, 2**31 - 1, int(defaults.seed), key="planning.seed",
                           help="Same seed, same ranking.")
    return SearchSettings(mode, int(samples), int(steps), int(beams), int(seed))


def _months(v: float) -> float | None:
    return round(v, 1) if math.isfinite(v) else None


def ranked_frame(result) -> pd.DataFrame:
    """The ranked plans for display (lowest risk first)."""
    rows = []
    for rank, s in enumerate(result.ranked, start=1):
        viable = s.volumes.get("viable_tumour")
        rows.append({"Rank": rank, "Plan": s.plan.canonical(), "Protocol": s.plan.protocol.value,
                     "Log-risk (mean)": round(s.risk_mean, 3), "± sd": round(s.risk_sd, 3),
                     "Median survival (months)": _months(s.median_months),
                     "RMST (months)": round(s.rmst_months, 1),
                     "Viable tumour change (ml)": None if viable is None else round(viable.mean_change_ml, 2)})
    return pd.DataFrame(rows)


def survival_curves_figure(result, shown: list[int]) -> go.Figure:
    """Mean predicted survival curve of each shown plan (indices into ``result.ranked``) on one plot."""
    fig = go.Figure()
    for i in shown:
        s = result.ranked[i]
        fig.add_trace(go.Scatter(x=s.survival_times, y=s.survival_mean, mode="lines", line={"shape": "hv"},
                                 name=f"{i + 1}. {s.plan.canonical()}"))
    fig.update_layout(xaxis_title="Months after TACE", yaxis_title="Predicted survival probability",
                      yaxis_range=[0, 1.02], height=400, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def _slices(result, rank_index: int) -> None:
    score = result.ranked[rank_index]
    sim = result.simulation(score)
    samples = sim.crops_hu.shape[0]
    sample = st.slider("Sample", 1, samples, 1, key="planning.sample") - 1 if samples > 1 else 0
    before_after(result.pre_hu, result.pre_labels, sim.crops_hu[sample], sim.labels[sample], result.crop,
                 f"After {score.plan.canonical()}: sample {sample + 1} (simulated)", key="planning")


def planning_view(result) -> None:
    """Ranked table, survival curves, slices of a chosen plan, downloads."""
    from pipelines.planning.files import planning_report_html

    st.subheader("Ranked plans (lowest predicted risk first)")
    if result.imputed:
        st.warning("Missing covariates were replaced by the survival model's training means: "
                   f"{', '.join(result.imputed)}. The risks are estimates under that assumption.",
                   icon=":material/warning:")
    if result.crop_note:
        st.warning(result.crop_note, icon=":material/warning:")
    frame = ranked_frame(result)
    st.dataframe(frame, hide_index=True, key="planning.table")
    st.caption(f"{len(result.ranked)} plans scored by {result.settings['mode']} search; "
               f"{result.settings['samples']} simulated outcome(s) per plan, seed {result.settings['seed']}; "
               f"{result.denoiser_passes} denoiser passes, {result.timings.get('total', float('nan')):.1f} s. "
               "Survival model: " + str(result.settings["survival_model"]["kind"]) + ".")
    labels = [f"{i + 1}. {s.plan.canonical()}" for i, s in enumerate(result.ranked)]
    st.subheader("Predicted survival")
    shown = st.multiselect("Plans on the plot", labels, default=labels[:min(3, len(labels))],
                           key="planning.curves")
    st.plotly_chart(survival_curves_figure(result, [labels.index(x) for x in shown]), key="planning.chart")
    st.subheader("Before and after")
    choice = st.selectbox("Plan shown", labels, key="planning.show_plan")
    _slices(result, labels.index(choice))
    c1, c2 = st.columns(2)
    c1.download_button("Download report (HTML)", planning_report_html(result),
                       file_name=f"planning_{result.case_id}.html", mime="text/html", key="planning.report",
                       icon=":material/description:")
    c2.download_button("Download table (CSV)", result.table().to_csv(index=False),
                       file_name=f"planning_{result.case_id}.csv", mime="text/csv", key="planning.csv",
                       icon=":material/table:")
