"""Turing test (reader): sign in with an access code, judge one image at a time as real or synthetic.

Blinding: the page receives the item's PNG bytes and its position only. Every item is shown with the same widgets,
labels and keys (the form key counts positions, not items); the item's identity stays in server-side session state.
Each answer is committed before the next item is shown, so a refresh or a server restart resumes at the next item.
"""

import time

import streamlit as st

from app.components.turing import turing_page
from app.errors import shown_errors
from models.errors import AccessDeniedError, AnswerConflictError, StudyClosedError

CALLS = {"Real": "real", "Synthetic": "synthetic"}
CONFIDENCE = {1: "1 · guessing", 2: "2", 3: "3", 4: "4", 5: "5 · certain"}

store = turing_page("Turing test: real or simulated?", admin=False)

reader = st.session_state["turing.reader"]
if reader is None:
    st.markdown("Enter the access code the study administrator gave you. You can stop at any time and come back "
                "later with the same code: your answers are saved one by one.")
    with st.form("turing.sign_in"):
        code = st.text_input("Access code", type="password", key="turing.code")
        signed_in = st.form_submit_button("Start reading", type="primary")
    if signed_in:
        try:
            st.session_state["turing.reader"] = store.login(code)
            st.session_state["turing.shown"] = None
            st.rerun()
        except AccessDeniedError as e:
            time.sleep(0.5)
            st.error(str(e))
    st.stop()

top, out = st.columns([4, 1])
top.markdown(f"Reader **{reader.name}** · study **{reader.study_name}**")
if out.button("Sign out", key="turing.sign_out"):
    st.session_state["turing.reader"] = None
    st.session_state["turing.shown"] = None
    st.rerun()
if st.session_state["turing.notice"]:
    st.info(st.session_state["turing.notice"])
    st.session_state["turing.notice"] = None

item = None
with shown_errors("loading the next image"):
    try:
        item = store.next_item(reader.reader_id)
    except StudyClosedError as e:
        st.info(str(e))
        st.stop()
    if item is None:
        _, total = store.progress(reader.reader_id)
        st.success(f"You have answered all {total} images. Thank you! You can close this page.")
        st.stop()
if item is None:
    st.stop()

if st.session_state["turing.shown"] is None or st.session_state["turing.shown"][0] != item.token:
    st.session_state["turing.shown"] = (item.token, time.monotonic())
st.progress((item.position - 1) / item.total, text=f"Image {item.position} of {item.total}")
st.markdown("Is this **post-treatment** CT (axial slices, fixed window) a real scan or made by the model?")
if item.context_png is not None:
    st.image(item.context_png, caption="Before treatment (context)", output_format="PNG",
             alt="Pre-treatment CT slices (context)")
st.image(item.png, caption="After treatment: judge this image", output_format="PNG",
         alt="Post-treatment CT slices to judge")

with st.form(f"turing.answer.{item.position}"):
    call = st.radio("This post-treatment image is", list(CALLS), index=None, horizontal=True,
                    key=f"turing.call.{item.position}")
    confidence = st.radio("Confidence", list(CONFIDENCE), index=None, horizontal=True, format_func=CONFIDENCE.get,
                          key=f"turing.confidence.{item.position}")
    comment = st.text_area("Comment (optional)", max_chars=2000, key=f"turing.comment.{item.position}")
    submitted = st.form_submit_button("Submit and next", type="primary")
if submitted:
    if call is None or confidence is None:
        st.error("Choose real or synthetic, and a confidence from 1 to 5.")
        st.stop()
    token, shown_at = st.session_state["turing.shown"]
    with shown_errors("saving your answer"):
        try:
            store.submit_answer(reader.reader_id, token, CALLS[call], int(confidence), comment,
                                reading_ms=round((time.monotonic() - shown_at) * 1000))
        except AnswerConflictError as e:
            st.session_state["turing.notice"] = str(e)
        st.session_state["turing.shown"] = None
        st.rerun()
