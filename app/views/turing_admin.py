"""Turing admin: set up a reader study (sample cohort, another cohort, or two folders of crops), add readers and
give them access codes, open or close the study, read the audit log. Behind the admin passcode."""

import pandas as pd
import streamlit as st

from app import resources
from app.components.turing import study_picker, turing_page
from app.errors import shown_errors
from pipelines.config import DEFAULT_STEPS

SOURCES = ("Sample cohort (simulated now by the world model)", "Another cohort manifest",
           "Two folders of NIfTI crops")
ACTOR = "admin (app)"

store = turing_page("Turing test administration", admin=True)

new_tab, manage_tab, audit_tab = st.tabs(["New study", "Studies and readers", "Audit log"])

with new_tab:
    from pipelines.viewer import WINDOW_PRESETS

    source = st.radio("Images from", SOURCES, key="turing.admin.source")
    manifest = real_dir = synthetic_dir = None
    if source == SOURCES[1]:
        manifest = st.text_input("Cohort manifest (manifest.csv or its folder)", key="turing.admin.manifest")
    elif source == SOURCES[2]:
        real_dir = st.text_input("Folder of real crops (NIfTI, HU)", key="turing.admin.real_dir")
        synthetic_dir = st.text_input("Folder of synthetic crops (NIfTI, HU)", key="turing.admin.synthetic_dir")
    cohort = source != SOURCES[2]
    c1, c2, c3 = st.columns(3)
    name = c1.text_input("Study name", value="Pilot study", key="turing.admin.name")
    n_real = c2.number_input("Real items", 1, 500, 5, key="turing.admin.n_real",
                             help="Cohort sources: at most one per case with a post-treatment CT.")
    n_synthetic = c3.number_input("Synthetic items", 1, 500, 5, key="turing.admin.n_synthetic")
    c1, c2, c3 = st.columns(3)
    seed = c1.number_input("Seed", 0, 2**31 - 1, 0, key="turing.admin.seed",
                           help="Chooses the cases, the simulation noise and the item order (same seed, same study).")
    slices = c2.selectbox("Axial slices per item", [1, 3, 5], key="turing.admin.slices")
    gap = c3.number_input("Slice gap (mm)", 1.0, 30.0, 6.0, key="turing.admin.gap")
    c1, c2, c3 = st.columns(3)
    window = c1.selectbox("Window", list(WINDOW_PRESETS), index=list(WINDOW_PRESETS).index("Soft tissue"),
                          key="turing.admin.window")
    steps = c2.number_input("Denoising steps", 2, 200, DEFAULT_STEPS, key="turing.admin.steps", disabled=not cohort)
    context = c3.toggle("Show the pre-treatment image as context", key="turing.admin.context", disabled=not cohort,
                        help="Simulated crops keep the pre-treatment voxels outside the tumour's change region, so "
                             "a reader comparing with the context may spot identical background. Off by default.")
    disjoint = st.toggle("Real and synthetic items from different patients", key="turing.admin.disjoint",
                         disabled=not cohort,
                         help="Off: a patient may give both a real and a synthetic item (the reference design), so "
                              "a reader may meet the same patient twice. On: needs more cases than real items.")
    if st.button("Create study", type="primary", key="turing.admin.create"):
        from pipelines.turing.render import ViewSettings
        from pipelines.turing.sources import cohort_sources, folder_sources

        bar = st.progress(0.0, text="Preparing…")
        with shown_errors("setting up the study"):
            preset = WINDOW_PRESETS[window]
            view = ViewSettings(slices=int(slices), slice_gap_mm=float(gap), window_width=preset.width,
                                window_level=preset.level)
            if cohort:
                world = resources.world_model(resources.world_model_dir())
                sources = cohort_sources(manifest or resources.sample_data_dir(), world, int(n_real),
                                         int(n_synthetic), seed=int(seed), steps=int(steps),
                                         disjoint=bool(disjoint),
                                         progress=lambda d, t, m: bar.progress(d / t, text=f"Simulating {d}/{t}"))
            else:
                sources = folder_sources(real_dir or "", synthetic_dir or "", int(n_real), int(n_synthetic),
                                         seed=int(seed))
            study = store.create_study(name, sources, view, seed=int(seed), context=bool(context and cohort),
                                       actor=ACTOR,
                                       progress=lambda d, t, m: bar.progress(d / t, text=f"Rendering {d}/{t}"))
            st.success(f"Study #{study.id} “{study.name}” is open: {study.real} real and {study.synthetic} "
                       "synthetic items. Add its readers under “Studies and readers”.")
            for line in sources.skipped:
                st.caption(f"Left out: {line}")
        bar.empty()

with manage_tab:
    study = study_picker(store, "turing.admin.study")
    if study is not None:
        st.dataframe(pd.DataFrame([{"Study": f"#{s.id}", "Name": s.name, "Status": s.status, "Real": s.real,
                                    "Synthetic": s.synthetic, "Readers": s.readers, "Answers": s.answers,
                                    "Created (UTC)": f"{s.created_at:%Y-%m-%d %H:%M}"} for s in store.studies()]),
                     hide_index=True)
        closed = study.status == "closed"
        if st.button("Reopen the study" if closed else "Close the study", key="turing.admin.toggle"):
            with shown_errors("changing the study status"):
                store.set_status(study.id, "open" if closed else "closed", actor=ACTOR)
                st.rerun()
        st.subheader("Readers")
        with st.form("turing.admin.add_reader", clear_on_submit=True):
            c1, c2 = st.columns(2)
            reader_name = c1.text_input("Name", key="turing.admin.reader_name")
            role = c2.text_input("Role", placeholder="e.g. radiologist, 10 years", key="turing.admin.reader_role")
            add = st.form_submit_button("Add reader")
        if add:
            with shown_errors("adding the reader"):
                st.session_state["turing.new_code"] = store.add_reader(study.id, reader_name, role, actor=ACTOR)
        new = st.session_state["turing.new_code"]
        if new is not None:
            st.success(f"Access code for {new.name}: **{new.code}** — give it to the reader now: it is shown only "
                       "once and stored only as a salted hash.")
            if st.button("Done, hide the code", key="turing.admin.hide_code"):
                st.session_state["turing.new_code"] = None
                st.rerun()
        readers = store.readers(study.id)
        if readers:
            st.dataframe(pd.DataFrame([{"Reader": f"#{r.id}", "Name": r.name, "Role": r.role,
                                        "Answered": f"{r.answered}/{r.total}",
                                        "Last answer (UTC)": "" if r.last_answer_at is None
                                        else f"{r.last_answer_at:%Y-%m-%d %H:%M}"} for r in readers]),
                         hide_index=True)
            names = {r.id: f"#{r.id} {r.name}" for r in readers}
            c1, c2 = st.columns([3, 1])
            who = c1.selectbox("Reader", list(names), format_func=names.get, key="turing.admin.reset_who")
            if c2.button("New access code", key="turing.admin.reset"):
                with shown_errors("resetting the access code"):
                    st.session_state["turing.new_code"] = store.reset_code(who, actor=ACTOR)
                    st.rerun()
        else:
            st.caption("No readers yet.")

with audit_tab:
    events = store.audit()
    if events:
        st.dataframe(pd.DataFrame([{"When (UTC)": e["at"], "Who": e["actor"], "Study": e["study_id"],
                                    "What": e["action"], "Details": str(e["details"])} for e in events]),
                     hide_index=True)
    else:
        st.caption("Nothing yet.")
