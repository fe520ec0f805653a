"""The one prompt template: messages, prefill, step splitting and question preparation."""

import pytest

from models.errors import ReasoningInputError
from pipelines.reasoning.template import (MAX_QUESTION_CHARS, ROOT_STEP, build_messages, chatml_prompt, format_steps,
                                          prepare_question, response_prefix, split_steps)


def test_format_and_split_round_trip():
    steps = [ROOT_STEP, "Scurvy is vitamin C deficiency.", "The answer is B."]
    text = format_steps(steps)
    assert text == f"Step 0: {ROOT_STEP}\n\nStep 1: Scurvy is vitamin C deficiency.\n\nStep 2: The answer is B."
    assert split_steps(text) == steps


def test_prefix_opens_the_next_step():
    assert response_prefix() == f"Step 0: {ROOT_STEP}\n\nStep 1:"
    assert response_prefix(["x"]).endswith("Step 1: x\n\nStep 2:")


@pytest.mark.parametrize("text, steps", [
    ("", []),
    ("B. Vitamin C", ["B. Vitamin C"]),                      # no markers: one step, never a crash
    ("Intro\nStep 1: a\nStep 2: b", ["Intro", "a", "b"]),    # text before the first marker is a step
    ("Step 0: x\n\nStep 1:\n\nStep 2: y", ["x", "", "y"]),   # empty steps kept for the guards
    ("Step 0: x\n\nStep 1:", ["x"]),                         # a trailing empty header dropped
])
def test_split_steps_handles_non_step_outputs(text, steps):
    assert split_steps(text) == steps


def test_messages_and_chatml_share_the_template():
    msgs = build_messages("Q?")
    assert [m["role"] for m in msgs] == ["system", "user"] and msgs[1]["content"].endswith("Q?")
    prompt = chatml_prompt(msgs, "Step 0:")
    assert prompt.endswith("<|im_start|>assistant\nStep 0:") and "<|im_start|>system\n" in prompt


def test_empty_question_is_an_error():
    with pytest.raises(ReasoningInputError, match="empty"):
        prepare_question("   \n ")


def test_over_long_question_is_cut_visibly_and_keeps_options():
    q = "word " * 2000 + "\nA. yes\nB. no"
    prepared = prepare_question(q)
    assert prepared.truncated and len(prepared.text) <= MAX_QUESTION_CHARS
    assert prepared.text.endswith("A. yes\nB. no")
    assert "only the first" in prepared.notice
    assert prepare_question("short?").notice is None
