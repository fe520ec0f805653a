"""Batch Scoring: plan every case of a cohort manifest (the sample cases, an upload, or a path on the server) and
download the results table. The batch is resumable: running the same manifest with the same settings again
continues where it stopped."""

import os
from pathlib import Path

import streamlit as st

from app import resources
from app.errors import shown_errors

SOURCES = ("Sample cases", "Upload a manifest", "Manifest on the server")
COLUMNS = {"case_id": "Case", "status": "Status", "best_plan": "Best plan", "best_risk_mean": "Log-risk (mean)",
           "best_risk_sd": "± sd", "best_median_months": "Median survival (months)", "plan_2_plan": "2nd plan",
           "plan_3_plan": "3rd plan", "seconds": "Seconds"}


def init_state() -> None:
    """The page's own session keys (``batch.*``), created once."""
    st.session_state.setdefault("batch.report", None)


def choose_manifest() -> str | None:
    """The manifest path the user picked (an upload is staged in the app's data folder first), or None."""
    source = st.radio("Manifest", SOURCES, key="batch.source", horizontal=True)
    if source == SOURCES[0]:
        return str(Path(resources.sample_data_dir()) / "manifest.csv")
    if source == SOURCES[2]:
        path = st.text_input("Path of manifest.csv (or its folder) on the server", key="batch.path")
        return path.strip() or None
    csv_file = st.file_uploader("manifest.csv", type=["csv"], key="batch.csv",
                                help="Columns case_id and ct are required; file paths are relative to the manifest.")
    zip_file = st.file_uploader("Zip of the files it names (optional if the paths exist on the server)",
                                type=["zip"], key="batch.zip")
    if csv_file is None:
        return None
    from pipelines.config import load_config
    from pipelines.planning.batch import stage_uploaded_manifest

    root = Path(load_config().app.data_dir).expanduser() / "batch_uploads"
    return str(stage_uploaded_manifest(csv_file.getvalue(), None if zip_file is None else zip_file.getvalue(), root))


def batch_controls(defaults, n_cases: int) -> dict:
    """Settings of the run (search defaults from ``[planning]``) plus workers and limit."""
    c1, c2, c3, c4, c5, c6 = st.columns(6)
    modes = ["beam", "exhaustive"]
    mode = c1.selectbox("Search", modes, index=modes.index(defaults.mode) if defaults.mode in modes else 0,
                        key="batch.mode")
    samples = c2.number_input("Samples per plan", 1, 16, int(defaults.samples), key="batch.samples")
    steps = c3.number_input("Denoising steps", 1, 200, int(defaults.steps), key="batch.steps")
    seed = c4.number_input("Seed", 0, 2**31 - 1, int(defaults.seed), key="batch.seed")
    workers = c5.number_input("Worker processes", 1, max(1, os.cpu_count() or 1), 1, key="batch.workers")
    limit = c6.number_input("First N cases (0: all)", 0, max(n_cases, 0), 0, key="batch.limit")
    plans = st.multiselect("Fixed candidate plans (optional: replaces the policy; every case is searched over "
                           "exactly these)", resources.suggested_plans(), key="batch.plans")
    return {"settings": {"mode": mode, "samples": int(samples), "steps": int(steps), "seed": int(seed),
                         "candidates": plans or None},
            "workers": int(workers), "limit": int(limit) or None}


def failure_reason(error_type: str, message: str) -> str:
    """The project's typed errors in their own words; anything else without its (possibly identifying) text."""
    import models.errors as errors

    kind = getattr(errors, str(error_type), None)
    if isinstance(kind, type) and issubclass(kind, errors.MeWMError):
        return str(message)
    return f"an unexpected {error_type} (details in the batch's failed/ folder)"


def show_report(report) -> None:
    ok, failed, pending = report.ok, report.failed, report.pending
    c1, c2, c3 = st.columns(3)
    c1.metric("Scored", ok)
    c2.metric("Failed", failed)
    c3.metric("Cases per hour (this run)", "—" if report.scored == 0 else f"{report.cases_per_hour:.0f}")
    st.caption(f"{report.scored} planned in this run, {report.skipped} already done, {pending} pending. "
               f"Output folder: {report.out}")
    table = report.results[list(COLUMNS)].rename(columns=COLUMNS)
    st.dataframe(table, hide_index=True, key="batch.table")
    st.download_button("Download results (CSV)", (report.out / "results.csv").read_bytes(),
                       file_name="batch_results.csv", mime="text/csv", key="batch.download")
    for f in report.failures():
        st.warning(f"{f['case_id']}: {failure_reason(f['error_type'], f['error'])}", icon=":material/error:")


st.title("Batch Scoring")
st.warning("Research use only — not for clinical use. Plans are ranked by research models (the embedded defaults "
           "were trained on a synthetic cohort); they must not guide the treatment of any patient.",
           icon=":material/science:")
init_state()
config = resources.planning_config()
manifest, records = None, []
with shown_errors("reading the manifest"):
    manifest = choose_manifest()
    if manifest is not None:
        from pipelines.manifest import read_manifest

        records = read_manifest(manifest)
if not records:
    st.info("Choose a manifest with at least one case.")
    st.stop()
st.caption(f"{len(records)} cases in {manifest}. Policy backend: `{config.policy.backend}`; survival model: "
           f"`{config.planning.survival_dir}`.")
choice = batch_controls(config.planning, len(records))
if st.button("Score the batch", type="primary", key="batch.run"):
    from pipelines.planning.batch import batch_settings, default_out_dir, score_manifest

    bar = st.progress(0.0, text="Starting the workers…")
    with shown_errors("scoring the batch"):
        settings = batch_settings(choice["settings"], manifest=manifest, config=config)
        out = default_out_dir(Path(config.app.data_dir) / "batches", settings)
        st.session_state["batch.report"] = score_manifest(
            manifest, out, workers=choice["workers"], settings=choice["settings"], limit=choice["limit"],
            config=config, progress=lambda done, total, message: bar.progress(min(1.0, done / max(total, 1)),
                                                                               text=f"{done}/{total}: {message}"))
    bar.empty()

report = st.session_state["batch.report"]
shown = Path(manifest).expanduser().resolve()
shown = shown / "manifest.csv" if shown.is_dir() else shown
if report is not None and Path(report.settings["manifest"]) == shown:  # the last run of this manifest
    with shown_errors("showing the results"):
        show_report(report)
