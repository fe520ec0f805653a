"""The `openai` policy against a real OpenAI-protocol HTTP server that the tests run on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from policy_helpers import GOOD_LIVER, make_case

from models.action_base import default_action_base
from models.errors import ConfigError, PolicyConnectionError, PolicyRefusalError, PolicyReplyError
from models.plan import Plan, Protocol
from pipelines.config import PolicyConfig
from pipelines.policy import load_policy
from pipelines.policy.openai_backend import OpenAIPolicy

VALID = {"drug_set": ["Epirubicin", "Cisplatin"], "embolic_set": ["Lipiodol", "Gelatin Sponge"],
         "protocols": ["cTACE"], "preferred_plan": {"agents": ["Epirubicin", "Lipiodol"], "protocol": "cTACE"},
         "rationale": "Intermediate burden, good liver reserve."}


def chat(content: str | None = None, refusal: str | None = None, finish: str = "stop") -> dict:
    return {"id": "x", "object": "chat.completion", "model": "tiny",
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": content, "refusal": refusal}}]}


class ScriptedServer:
    """Answers each POST with the next scripted ``(status, body, delay_s)``; records every request."""

    def __init__(self, script: list[tuple[int, object, float]]):
        self.script, self.requests = list(script), []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.requests.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
                status, reply, delay = owner.script.pop(0) if owner.script else (500, {"error": "script empty"}, 0)
                time.sleep(delay)
                data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(*script):
        s = ScriptedServer(list(script))
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


@pytest.fixture(scope="module")
def case():
    return make_case(covariates=GOOD_LIVER)


def policy(server, **kw) -> OpenAIPolicy:
    return OpenAIPolicy(server.url, "tiny-vlm", **{"max_retries": 2, "timeout_s": 10.0, **kw})


def ok(obj) -> tuple[int, dict, float]:
    return (200, chat(obj if isinstance(obj, str) else json.dumps(obj)), 0.0)


def test_valid_reply_and_the_request_it_answers(serve, case, monkeypatch):
    monkeypatch.setenv("TEST_POLICY_KEY", "sk-secret-123")
    server = serve(ok(VALID))
    p = policy(server, api_key_env="TEST_POLICY_KEY").propose(case)
    assert p.backend == "openai" and p.model == "tiny-vlm" and p.attempts == 1
    assert p.drugs == ("Cisplatin", "Epirubicin") and p.protocols == (Protocol.CTACE,)
    assert p.preferred == Plan.from_agents(["Epirubicin", "Lipiodol"])
    assert p.rationale == VALID["rationale"] and json.loads(p.raw_reply) == VALID
    assert p.candidate_plans()
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret-123" not in json.dumps(p.to_dict())
    body = req["json"]
    assert body["model"] == "tiny-vlm" and body["messages"][0]["role"] == "system"
    content = body["messages"][1]["content"]
    images = [c["image_url"]["url"] for c in content if c["type"] == "image_url"]
    assert len(images) >= 2
    for url in images:
        assert url.startswith("data:image/png;base64,")
        assert base64.b64decode(url.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    text = next(c["text"] for c in content if c["type"] == "text")
    assert "Child-Pugh class A" in text and "lesion" in text
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    schema = rf["json_schema"]["schema"]
    assert set(schema["required"]) == {"drug_set", "embolic_set", "protocols", "preferred_plan", "rationale"}
    assert schema["properties"]["drug_set"]["items"]["enum"] == [a.name for a in default_action_base().drugs]
    assert schema["properties"]["embolic_set"]["items"]["enum"] == [a.name for a in default_action_base().embolics]


def test_no_key_no_header_and_no_treatment_leak(serve, monkeypatch):
    from pipelines.samples import load_sample_case

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = serve(ok(VALID))
    policy(server).propose(load_sample_case("VC00000"))
    req = server.requests[0]
    assert "Authorization" not in req["headers"]
    text = json.dumps(req["json"]["messages"][1]["content"][0])
    assert "PVA" not in text.split("Action Base")[0]  # the administered plan (Epirubicin; Lipiodol; PVA) is not sent
    assert "emulsion of 16 ml" not in text and "12.1" not in text


def test_invalid_then_valid_sends_the_problems_back(serve, case):
    server = serve(ok("{\"drug_set\": [\"Epirubicin\"]}"), ok(VALID))
    p = policy(server).propose(case)
    assert p.attempts == 2 and len(server.requests) == 2
    msgs = server.requests[1]["json"]["messages"]
    assert msgs[2]["role"] == "assistant" and msgs[3]["role"] == "user"
    assert "missing key(s)" in msgs[3]["content"] and "embolic_set" in msgs[3]["content"]


def test_unknown_agent_on_every_attempt_is_a_reply_error(serve, case):
    bad = {**VALID, "drug_set": ["Epirubicin", "Aspirin"]}
    server = serve(ok(bad), ok(bad), ok(bad))
    with pytest.raises(PolicyReplyError, match="after 3 attempt") as e:
        policy(server).propose(case)
    assert len(server.requests) == 3
    assert any("Aspirin" in p for p in e.value.problems) and e.value.attempts == 3


def test_rule_breaking_preferred_plan_is_retried(serve, case):
    bad = {**VALID, "drug_set": ["Cisplatin", "Lobaplatin", "Epirubicin"],
           "preferred_plan": {"agents": ["Cisplatin", "Lobaplatin", "Lipiodol"], "protocol": "cTACE"}}
    server = serve(ok(bad), ok(VALID))
    p = policy(server).propose(case)
    assert p.attempts == 2
    feedback = server.requests[1]["json"]["messages"][3]["content"]
    assert "R1" in feedback and "platinum" in feedback


def test_aliases_and_code_fence_are_accepted(serve, case):
    reply = {**VALID, "drug_set": ["THP"], "embolic_set": ["LC Beads"], "protocols": ["DEB-TACE"],
             "preferred_plan": {"agents": ["thp", "DC Beads"], "protocol": "DEB-TACE"}}
    server = serve(ok("```json\n" + json.dumps(reply) + "\n```"))
    p = policy(server).propose(case)
    assert p.drugs == ("Pirarubicin",) and p.embolics == ("Drug-eluting Beads",)
    assert p.preferred.protocol is Protocol.DEB_TACE


@pytest.mark.parametrize("reply, err, word", [
    (chat(None, refusal="I can't help with medical treatment decisions."), PolicyRefusalError, "refused"),
    (chat(""), PolicyRefusalError, "no content"),
    (chat("Sure! Here are some drugs: epirubicin and lipiodol."), PolicyReplyError, "not valid JSON"),
    (chat("[1, 2]"), PolicyReplyError, "JSON object"),
    (chat(json.dumps({**VALID, "extra": 1})), PolicyReplyError, "unexpected key"),
    (chat(json.dumps({**VALID, "embolic_set": []})), PolicyReplyError, "embolic"),
    (chat(json.dumps({**VALID, "protocols": ["DEB-TACE"], "preferred_plan": VALID["preferred_plan"]})),
     PolicyReplyError, "not in protocols"),
])
def test_unusable_replies_are_typed_errors_after_retries(serve, case, reply, err, word):
    server = serve(*[(200, reply, 0.0)] * 3)
    with pytest.raises(err, match=word):
        policy(server).propose(case)
    assert len(server.requests) == 3


def test_refusal_then_valid(serve, case):
    server = serve((200, chat(None, refusal="no"), 0.0), ok(VALID))
    assert policy(server).propose(case).attempts == 2


def test_slow_server_times_out(serve, case):
    server = serve((200, chat(json.dumps(VALID)), 2.0))
    with pytest.raises(PolicyConnectionError, match="did not answer within 0.3 s"):
        policy(server, timeout_s=0.3).propose(case)
    assert len(server.requests) == 1  # transport errors are not retried


@pytest.mark.parametrize("status, body, word", [
    (401, {"error": {"message": "Invalid API key"}}, "MY_KEY_VAR"),
    (404, {"error": {"message": "model not found"}}, "openai_model"),
    (500, "oops", "HTTP 500"),
    (200, "<html>not json</html>", "not a chat completion"),
    (200, {"choices": []}, "not a chat completion"),
])
def test_http_errors_are_connection_errors(serve, case, status, body, word):
    server = serve((status, body, 0.0))
    with pytest.raises(PolicyConnectionError, match=word):
        policy(server, api_key_env="MY_KEY_VAR").propose(case)


def test_no_server_is_a_connection_error(case):
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PolicyConnectionError, match="Cannot reach"):
        OpenAIPolicy(f"http://127.0.0.1:{port}/v1", "m", timeout_s=2.0).propose(case)


def test_config_checks_and_load_policy():
    p = load_policy(PolicyConfig(backend="openai", openai_base_url="http://127.0.0.1:9/v1/", openai_model="m",
                                 max_retries=1))
    assert isinstance(p, OpenAIPolicy) and p.endpoint == "http://127.0.0.1:9/v1/chat/completions"
    with pytest.raises(ConfigError, match="http"):
        OpenAIPolicy("127.0.0.1:8000", "m")
    with pytest.raises(ConfigError, match="openai_model"):
        OpenAIPolicy("http://x/v1", " ")
    with pytest.raises(ConfigError, match="max_retries"):
        OpenAIPolicy("http://x/v1", "m", max_retries=-1)
