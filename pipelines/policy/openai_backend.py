"""The ``openai`` policy: any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, LM Studio).

One ``POST {base_url}/chat/completions`` per attempt with the three rendered views as PNG data URLs, the case text
and ``response_format = {"type": "json_schema", "json_schema": {"name", "strict": true, "schema"}}``. The reply is
read strictly and retried with its problems (`pipelines.policy.validate`). Transport failures (no server, timeout,
HTTP status, a body that is not a chat completion) raise `PolicyConnectionError` at once, with the reason and a
hint; they are not retried, so a dead server costs one timeout, not ``max_retries`` of them.

The API key is read from the environment variable named by ``[policy] openai_api_key_env`` (never from the config
file) and sent only in the ``Authorization`` header; it never appears in messages, logs or the proposal. With no
key set, no header is sent (local vLLM / Ollama need none).
"""

from __future__ import annotations

import base64
import json
import os
import typing
from typing import Any

from models.errors import ConfigError, PolicyConnectionError
from pipelines.case import Case
from pipelines.policy.base import Proposal
from pipelines.policy.prompt import SCHEMA_NAME, SYSTEM_PROMPT, proposal_schema, user_text
from pipelines.policy.render import render_views
from pipelines.policy.validate import ModelReply, Turn, propose_with_retries

if typing.TYPE_CHECKING:
    from pipelines.config import PolicyConfig

__all__ = ["OpenAIPolicy"]


class OpenAIPolicy:
    """Proposals from an OpenAI-compatible server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1`` (vLLM) or ``https://api.openai.com/v1``.
        model: the served model name.
        api_key_env: name of the environment variable holding the key (may be unset).
        max_retries: retries after an invalid or refused reply.
        timeout_s: per-request timeout.
        temperature: sampling temperature sent to the server.
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", max_retries: int = 3,
                 timeout_s: float = 60.0, temperature: float = 0.2):
        # 1. Check inputs.
        url = str(base_url).strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"[policy] openai_base_url must start with http:// or https://, got {base_url!r} "
                              "(e.g. http://127.0.0.1:8000/v1).")
        if not str(model).strip():
            raise ConfigError("[policy] openai_model is empty; set the served model name (e.g. gpt-4o).")
        if int(max_retries) < 0:
            raise ConfigError(f"[policy] max_retries must be >= 0, got {max_retries}.")
        if not float(timeout_s) > 0:
            raise ConfigError(f"[policy] timeout_s must be > 0, got {timeout_s}.")
        self.base_url, self.model, self.api_key_env = url, str(model).strip(), str(api_key_env)
        self.max_retries, self.timeout_s, self.temperature = int(max_retries), float(timeout_s), float(temperature)

    @classmethod
    def from_config(cls, cfg: "PolicyConfig") -> "OpenAIPolicy":
        return cls(cfg.openai_base_url, cfg.openai_model, cfg.openai_api_key_env, cfg.max_retries, cfg.timeout_s,
                   cfg.temperature)

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    # -------------------------------------------------------------------------------------------- proposal
    def propose(self, case: Case) -> Proposal:
        """Render the case, ask the server, validate; retries as `propose_with_retries`."""
        images = render_views(case)
        content: list[dict[str, Any]] = [{"type": "text", "text": user_text(case)}]
        content += [{"type": "image_url",
                     "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}}
                    for png in images]
        base = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]

        def ask(history: list[Turn]) -> ModelReply:
            messages = list(base)
            for turn in history:
                messages += [{"role": "assistant", "content": turn.reply}, {"role": "user", "content": turn.feedback}]
            return self._chat(messages)

        return propose_with_retries(ask, self.name, self.model, self.max_retries)

    def request_body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The JSON body of one chat-completions request."""
        return {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "seed": 0,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": proposal_schema()}},
        }

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env, "").strip()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _chat(self, messages: list[dict[str, Any]]) -> ModelReply:
        import httpx

        where = f"the policy server {self.endpoint}"
        try:
            r = httpx.post(self.endpoint, json=self.request_body(messages), headers=self._headers(),
                           timeout=self.timeout_s)
        except httpx.TimeoutException as e:
            raise PolicyConnectionError(f"{where} did not answer within {self.timeout_s:g} s ([policy] timeout_s); "
                                        f"is the model loaded? ({type(e).__name__})") from None
        except httpx.HTTPError as e:
            raise PolicyConnectionError(f"Cannot reach {where}: {type(e).__name__}: {e}. Check [policy] "
                                        "openai_base_url and that the server is running.") from None
        if r.status_code != 200:
            raise PolicyConnectionError(
                f"{where} answered HTTP {r.status_code}: {_error_text(r)}{_hint(r.status_code, self)}")
        try:
            data = r.json()
            choice = data["choices"][0]
            message = choice["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise PolicyConnectionError(f"{where} sent a response that is not a chat completion: "
                                        f"{r.text[:200]!r}. Is openai_base_url the API root (ending in /v1)?") from None
        refusal = message.get("refusal") if isinstance(message, dict) else None
        if choice.get("finish_reason") == "content_filter" and not refusal:
            refusal = "the server's content filter stopped the reply"
        text = message.get("content") if isinstance(message, dict) else None
        if text is not None and not isinstance(text, str):
            text = json.dumps(text)
        return ModelReply(text=text, refusal=refusal)


def _error_text(r: Any) -> str:
    try:
        err = r.json().get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return str(msg)[:300]
    except (ValueError, AttributeError):
        pass
    return (r.text or "(empty body)")[:300]


def _hint(status: int, policy: OpenAIPolicy) -> str:
    if status in (401, 403):
        return (f". Set the API key in the environment variable {policy.api_key_env} "
                "([policy] openai_api_key_env names it).")
    if status == 404:
        return f". Check [policy] openai_base_url ({policy.base_url}) and openai_model ({policy.model})."
    if status in (400, 422):
        return ". The server may not support response_format json_schema or image inputs with this model."
    if status == 429:
        return ". The server is rate limiting; try again later."
    return "."
