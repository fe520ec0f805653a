"""Policy backends: the hf path on a tiny random Llama, the openai path against a local HTTP server (answers,
timeouts, refusals), and the errors a user can cause."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from models.errors import BackendUnavailableError, CheckpointNotFoundError, ModelOutputError, ReasoningInputError
from pipelines.config import load_config
from pipelines.reasoning.backends import HFBackend, OpenAIBackend, load_backend
from pipelines.reasoning.candidates import sample_candidates
from pipelines.reasoning.template import response_prefix

Q = "Which vitamin deficiency causes scurvy?\nA. Vitamin A\nB. Vitamin C"


def test_hf_backend_returns_n_continuations_per_prefix_in_one_call(tiny_causal_lm):
    import torch

    torch.set_num_threads(1)
    be = HFBackend(tiny_causal_lm)
    out = be.complete(Q, [response_prefix(), response_prefix(["x"])], n=3, max_new_tokens=8, seed=1)
    assert [len(g) for g in out] == [3, 3]
    assert all(0 < g.tokens <= 8 for gs in out for g in gs)
    again = be.complete(Q, [response_prefix(), response_prefix(["x"])], n=3, max_new_tokens=8, seed=1)
    assert [[g.text for g in gs] for gs in out] == [[g.text for g in gs] for gs in again]  # seeded
    greedy = be.complete(Q, [response_prefix()], n=2, temperature=0.0, max_new_tokens=6)[0]
    assert greedy[0].text == greedy[1].text
    assert be.prompt_text(Q, "Step 0:").endswith("<|im_start|>assistant\nStep 0:")


def test_hf_backend_missing_directory_names_the_fix(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="hf_model_dir"):
        HFBackend(tmp_path / "nope")
    with pytest.raises(CheckpointNotFoundError):
        load_backend(load_config(env={}), backend="hf", model_dir="")


def test_unknown_backend_suggests_a_name():
    with pytest.raises(ReasoningInputError, match="Did you mean 'openai'"):
        load_backend(load_config(env={}), backend="opnai")


class _Handler(BaseHTTPRequestHandler):
    mode = "ok"
    seen: list = []

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append(body)
        if _Handler.mode == "slow":
            time.sleep(3)
        if _Handler.mode == "error":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"model not loaded")
            return
        prefix = body["messages"][-1]["content"]
        texts = [" Scurvy is caused by a lack of ascorbic acid.\n\nStep 2: Ascorbic acid is vitamin C, needed for "
                 "collagen.\n\nStep 3: The answer is B."] * body["n"]
        if _Handler.mode == "repeat":  # a server that ignores continue_final_message
            texts = [prefix + t for t in texts]
        if _Handler.mode == "short":
            texts = texts[:1]
        reply = {"choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                             for i, t in enumerate(texts)]}
        data = json.dumps(reply).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (the timeout test)
            pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Handler.mode, _Handler.seen = "ok", []
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


@pytest.mark.parametrize("mode", ["ok", "repeat"])
def test_openai_backend_batches_n_and_parses(server, mode):
    _Handler.mode = mode
    be = OpenAIBackend(server, "tiny", timeout_s=5)
    cands = sample_candidates(be, Q, {"A": "Vitamin A", "B": "Vitamin C"}, n=4, max_new_tokens=64)
    assert len(_Handler.seen) == 1 and _Handler.seen[0]["n"] == 4  # one request for N candidates
    assert _Handler.seen[0]["continue_final_message"] is True
    assert [c.answer for c in cands] == ["B"] * 4 and len(cands[0].steps) == 4


def test_openai_backend_times_out_instead_of_hanging(server):
    _Handler.mode = "slow"
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="did not answer within 1 s"):
        OpenAIBackend(server, "tiny", timeout_s=1).complete(Q, ["Step 0:"], n=1)
    assert time.monotonic() - t0 < 3  # a hang guard, not a timing assertion of the code path


def test_openai_backend_errors_are_typed(server):
    _Handler.mode = "error"
    with pytest.raises(BackendUnavailableError, match="HTTP 500"):
        OpenAIBackend(server, "tiny", timeout_s=5).complete(Q, ["Step 0:"], n=1)
    _Handler.mode = "short"
    with pytest.raises(ModelOutputError, match="n > 1"):
        OpenAIBackend(server, "tiny", timeout_s=5).complete(Q, ["Step 0:"], n=3)
    with pytest.raises(BackendUnavailableError, match="Cannot reach"):
        OpenAIBackend("http://127.0.0.1:9/v1", "tiny", timeout_s=2).complete(Q, ["Step 0:"], n=1)
    with pytest.raises(ReasoningInputError, match="openai_model"):
        OpenAIBackend(server, "")
