"""Turing results: sensitivity, specificity, accuracy (Wilson 95 % intervals), synthetic judged real, Fleiss' kappa,
per reader and per confidence level, with CSV downloads. Behind the admin passcode (the results are unblinded)."""

import pandas as pd
import streamlit as st

from app.components.turing import study_picker, turing_page
from app.errors import shown_errors

FIGURES = (("sensitivity", "Sensitivity (synthetic called synthetic)"),
           ("specificity", "Specificity (real called real)"), ("accuracy", "Accuracy"),
           ("synthetic_judged_real", "Synthetic judged real"))


def _table(groups: dict, label: str) -> pd.DataFrame:
    rows = []
    for name, g in groups.items():
        row = {label: name, "Answers": g.answers}
        row.update({title: getattr(g, key).text() for key, title in FIGURES})
        row["Median reading time (s)"] = "" if g.median_reading_s != g.median_reading_s else \
            f"{g.median_reading_s:.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


store = turing_page("Turing test results", admin=True)
study = study_picker(store, "turing.results.study")
if study is None:
    st.stop()

with shown_errors("computing the results"):
    from pipelines.turing.export import answers_csv, summary_csv

    results = store.results(study.id)
    overall = results.overall
    st.markdown(f"**{overall.answers}** answer(s) from **{len(results.per_reader)}** reader(s) on "
                f"{study.items} items ({study.real} real, {study.synthetic} synthetic); study {study.status}.")
    if overall.answers == 0:
        st.info("No answers yet.")
        st.stop()
    for column, (key, title) in zip(st.columns(4), FIGURES):
        p = getattr(overall, key)
        column.metric(title, "n/a" if p.n == 0 else f"{p.value:.0%}",
                      help=None if p.n == 0 else f"95 % CI {p.low:.0%}–{p.high:.0%} (Wilson), {p.k}/{p.n}")
        column.caption(p.text())
    a = results.agreement
    st.markdown("**Agreement between readers (Fleiss' kappa):** "
                + ("n/a" if a.kappa is None else f"{a.kappa:.3f}") + f" — {a.items} item(s) × {a.readers} "
                f"reader(s); {a.note}.")
    st.subheader("Per reader")
    st.dataframe(_table(results.per_reader, "Reader"), hide_index=True)
    st.subheader("By confidence")
    st.dataframe(_table({str(k): v for k, v in results.by_confidence.items()}, "Confidence"), hide_index=True)
    st.caption(" ".join(results.notes))

    def _log(what: str) -> None:
        store.log("exported", study.id, {"what": what, "via": "app download"}, actor="admin (app)")

    c1, c2 = st.columns(2)
    c1.download_button("Answers (CSV)", answers_csv(store.answer_rows(study.id)),
                       file_name=f"turing_study{study.id}_answers.csv", mime="text/csv", key="turing.results.answers",
                       on_click=_log, args=("answers",))
    c2.download_button("Summary (CSV)", summary_csv(results), file_name=f"turing_study{study.id}_summary.csv",
                       mime="text/csv", key="turing.results.summary", on_click=_log, args=("summary",))
