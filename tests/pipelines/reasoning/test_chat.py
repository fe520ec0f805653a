"""answer_question end to end: openai backend (local server) + a tiny PRM checkpoint; guards and errors."""

import pytest

from models.errors import ReasoningInputError
from pipelines.config import load_config
from pipelines.reasoning.backends import OpenAIBackend
from pipelines.reasoning.chat import answer_question
from pipelines.reasoning.prm import load_prm
from reasoning_helpers import BARE, GOOD, start_fake_openai

Q = "Which vitamin deficiency causes scurvy?\nA. Vitamin A\nB. Vitamin C\nC. Vitamin D"


@pytest.fixture
def server():
    url, srv = start_fake_openai([BARE, GOOD, BARE, GOOD])
    yield url
    srv.shutdown()


def test_answer_question_scores_every_candidate_and_never_picks_a_bare_answer(server, tiny_prm_dir):
    result = answer_question(Q, n=4, backend=OpenAIBackend(server, "tiny", timeout_s=5), prm=load_prm(tiny_prm_dir),
                             config=load_config(env={}))
    assert len(result.candidates) == 4
    assert [len(c.step_scores) for c in result.candidates] == [1, 3, 1, 3]  # steps 1..n, Step 0 excluded
    assert [c.eligible for c in result.candidates] == [False, True, False, True]
    assert result.choice.answer == "B" and result.chosen.answer == "B"
    assert result.vote.answer in {"B", "C"}
    d = result.to_dict()
    assert d["backend"] == "openai" and d["model"] == "tiny" and "Research use only" in d["disclaimer"]
    assert "Chosen answer: B" in result.text()


@pytest.mark.parametrize("kwargs, match", [({"n": 0}, "N must be"), ({"aggregation": "sum"}, "aggregation")])
def test_bad_settings_are_typed_errors(server, tiny_prm_dir, kwargs, match):
    with pytest.raises(ReasoningInputError, match=match):
        answer_question(Q, backend=OpenAIBackend(server, "tiny"), prm=load_prm(tiny_prm_dir), **kwargs)


def test_empty_question_fails_before_any_model_call(tiny_prm_dir):
    with pytest.raises(ReasoningInputError, match="empty"):
        answer_question("  ", backend=OpenAIBackend("http://127.0.0.1:9/v1", "x"), prm=load_prm(tiny_prm_dir))


def test_long_question_is_truncated_with_a_notice(server, tiny_prm_dir):
    result = answer_question("why " * 3000 + "\nA. Vitamin A\nB. Vitamin C", n=2,
                             backend=OpenAIBackend(server, "tiny", timeout_s=5), prm=load_prm(tiny_prm_dir))
    assert result.notice and "only the first" in result.notice
    assert result.options == {"A": "Vitamin A", "B": "Vitamin C"}
