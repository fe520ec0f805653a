"""Reasoning Chat: a medical question answered step by step, best-of-N chosen by a process reward model."""

import html

import streamlit as st

from app import resources
from app.errors import shown_errors

st.title("Reasoning Chat")
st.warning("Research use only, not for clinical use. Answers come from a small language model that is often wrong; "
           "the step scores rate the reasoning's form as the reward model learned it, not medical truth.")

if "reasoning.result" not in st.session_state:
    st.session_state["reasoning.result"] = None  # the last ReasoningResult of this session


def _settings():
    from pipelines.config import load_config

    return load_config().reasoning


def _colour(p: float) -> str:
    return "#c62828" if p < 0.3 else ("#ef6c00" if p < 0.6 else "#2e7d32")


def _steps_html(steps: list[str], scores: list[float]) -> str:
    """Each step with its PRM score as a coloured badge (Step 0 is never scored)."""
    rows = []
    for i, text in enumerate(steps):
        badge = ("<span style='color:#757575'>not scored</span>" if i == 0 or i > len(scores) else
                 f"<span style='background:{_colour(scores[i - 1])};color:white;padding:0 6px;border-radius:4px'>"
                 f"{scores[i - 1]:.2f}</span>")
        rows.append(f"<p>{badge} <b>Step {i}:</b> {html.escape(text)}</p>")
    return "\n".join(rows)


rc = _settings()
question = st.text_area("Question", key="reasoning.question", height=120,
                        placeholder="e.g. Which vitamin deficiency causes scurvy?")
options = st.text_area("Options (optional, one per line)", key="reasoning.options", height=100,
                       placeholder="Vitamin A\nVitamin C\nVitamin D")
c1, c2, c3 = st.columns(3)
n = c1.slider("Candidates (N)", 1, 16, min(rc.n, 16), key="reasoning.n")
aggregation = c2.selectbox("Step-score aggregation", ["min", "last", "mean", "prod"], key="reasoning.aggregation",
                           help="min (default): one weak step sinks a candidate; robust to padding and openers.")
selection = c3.selectbox("Selection", ["best", "pvs", "vote"], key="reasoning.selection",
                         format_func={"best": "PRM best-of-N", "pvs": "P-VS (sum of min scores per answer)",
                                      "vote": "majority vote"}.get)
st.caption(f"Policy: {rc.backend}"
           + (f" ({rc.hf_model_dir})" if rc.backend == "hf" else "")
           + (f" ({rc.openai_model} at {rc.openai_base_url})" if rc.backend == "openai" else "")
           + f" · PRM: {rc.prm_dir}")

if st.button("Answer", type="primary", key="reasoning.ask"):
    st.session_state["reasoning.result"] = None
    with shown_errors("answering the question"):
        from pipelines.reasoning.chat import answer_question
        from pipelines.reasoning.template import compose_question, prepare_question

        text = compose_question(question, options)
        prepare_question(text)  # empty question → a plain error before any model loads
        backend = resources.reasoning_backend(rc.backend, rc.hf_model_dir, rc.openai_base_url, rc.openai_model,
                                              rc.timeout_s)
        prm = resources.reasoning_prm(rc.prm_dir)
        bar = st.progress(0.0, text="Starting…")
        st.session_state["reasoning.result"] = answer_question(
            text, n=n, aggregation=aggregation, selection=selection, backend=backend, prm=prm,
            progress=lambda done, total, message: bar.progress(done / total, text=message))
        bar.empty()

result = st.session_state["reasoning.result"]
if result is not None:
    if result.notice:
        st.warning(result.notice)
    st.caption(f"Policy: {result.backend} `{result.model}` · PRM: `{result.prm}` · "
               f"generation {result.timings['generate_s']:.1f} s, PRM {result.timings['prm_s']:.1f} s")
    chosen = result.chosen
    if chosen is None:
        st.error(f"No answer could be chosen: {result.choice.why}. Majority vote: {result.vote.answer or 'none'}.")
    else:
        label = result.options.get(chosen.answer, "")
        st.subheader(f"Answer: {chosen.answer}" + (f". {label}" if label else ""))
        if result.choice.low_confidence:
            st.warning(f"Low confidence (margin {result.choice.margin:.2f} over the next answer, winning score "
                       f"{chosen.score:.2f}). Treat this answer as a guess.")
        st.markdown(f"Chosen by **{result.choice.selection}** / {result.choice.aggregation}: {result.choice.why}. "
                    f"Majority vote: **{result.vote.answer or 'none'}** ({result.vote.why}).")
        st.markdown(_steps_html(chosen.steps, chosen.step_scores), unsafe_allow_html=True)
    st.markdown("#### All candidates")
    for i, c in enumerate(result.candidates):
        won = " (chosen)" if i == result.choice.index else ""
        score = "—" if c.score is None else f"{c.score:.2f}"
        status = "eligible" if c.eligible else f"not eligible: {c.why_ineligible}"
        with st.expander(f"Candidate {i + 1}{won}: answer {c.answer or 'none'}, {result.choice.aggregation} score "
                         f"{score}"):
            st.caption(status)
            st.markdown(_steps_html(c.steps, c.step_scores), unsafe_allow_html=True)
