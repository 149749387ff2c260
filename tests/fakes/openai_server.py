"""A loopback OpenAI API, as the openai SDK expects it (shared/apis.md section 3).

- The SDK's base URL includes `/v1`: `OpenAI(base_url=fake.base_url + "/v1")`.
- Auth: `Authorization: Bearer KEY`; anything else is 401 `invalid_api_key`.
- `POST /v1/chat/completions`: a `chat.completion` whose message carries `tool_calls` (function
  name, arguments as a JSON string), `finish_reason`, `usage`; scripted through `script`
  (model_script.py). Errors in the API's shape `{"error":{"message","type","param","code"}}`.
- Faults from LoopbackServer: `inject("POST", "/v1/chat/completions", status=500)`, `delay=`, `drop=`.

More endpoints (e.g. `/v1/audio/transcriptions`): add a handler method and register it in
`routes`; `_authorized` and `error_response` are there to share.

Run it for a demo: `python -m tests.fakes.openai_server --port 8083 --api-key test-key`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from typing import Any

import structlog
from aiohttp import web

from tests.fakes.loopback import LoopbackServer
from tests.fakes.model_script import ModelScript, Scripted, estimate_tokens

log = structlog.get_logger(__name__)

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    503: "server_error",
}


def error_body(status: int, message: str, *, code: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _STATUS_TYPES.get(status, "server_error"),
            "param": None,
            "code": code,
        }
    }


def error_response(status: int, message: str, *, code: str | None = None) -> web.Response:
    return web.json_response(error_body(status, message, code=code), status=status)


class OpenAIFake(LoopbackServer):
    def __init__(self, api_key: str = "test-openai-key") -> None:
        self.api_key = api_key
        self.script = ModelScript()
        #: model -> request options it refuses with 400 "unsupported_parameter" (reasoning models did)
        self.unsupported: dict[str, set[str]] = {}
        #: what GET /v1/models lists
        self.models = ["gpt-4.1-mini", "gpt-4.1", "whisper-1", "gpt-4o-transcribe"]
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)

    @property
    def sdk_base_url(self) -> str:
        return self.base_url + "/v1"

    def fault_body(self, status: int) -> Any:
        return error_body(status, f"injected {status}")

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _models(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/models`: `{object: "list", data: [{id, object: "model", created, owned_by}]}`."""
        if not self._authorized(request):
            return error_response(401, "Incorrect API key provided.", code="invalid_api_key")
        data = [
            {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "openai"}
            for model in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return error_response(401, "Incorrect API key provided.", code="invalid_api_key")
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "We could not parse the JSON body of your request.")
        for name in ("model", "messages"):
            if name not in body:
                message = f"Missing required parameter: '{name}'."
                return error_response(400, message, code="missing_required_parameter")
        for option in sorted(self.unsupported.get(body["model"], set())):
            if option in body:
                message = f"Unsupported parameter: '{option}' is not supported with this model."
                response = error_body(400, message, code="unsupported_parameter")
                response["error"]["param"] = option
                return web.json_response(response, status=400)
        tools = [tool.get("function", {}).get("name") for tool in body.get("tools", [])]
        prompt_text = "\n".join(
            str(message.get("content", "")) for message in body["messages"] if message.get("role") == "user"
        )
        scripted = self.script.next(prompt_text, body)
        if scripted.kind == "raw":
            return web.Response(
                text=str(scripted.value), status=scripted.status, content_type=scripted.content_type
            )
        message, finish = _message(scripted, tools)
        prompt_tokens, completion_tokens = scripted.usage or (
            estimate_tokens(json.dumps(body)),
            estimate_tokens(json.dumps(message)),
        )
        return web.json_response(
            {
                "id": f"chatcmpl-{secrets.token_hex(12)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": scripted.stop or finish,
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
                "system_fingerprint": "fp_fake",
            }
        )


def _call(name: str, value: dict[str, Any] | str) -> dict[str, Any]:
    arguments = value if isinstance(value, str) else json.dumps(value)
    return {
        "id": f"call_{secrets.token_hex(12)}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def _message(scripted: Scripted, tools: list[Any]) -> tuple[dict[str, Any], str]:
    if scripted.kind == "text":
        return {"role": "assistant", "content": str(scripted.value), "refusal": None}, "stop"
    if scripted.kind == "calls":
        calls = [_call(name, value) for name, value in scripted.value]
    else:
        name = tools[0] if len(tools) == 1 else "propose_plan"
        calls = [_call(str(name), scripted.value)]
    return {"role": "assistant", "content": None, "refusal": None, "tool_calls": calls}, "tool_calls"


async def _serve(args: argparse.Namespace) -> None:
    fake = OpenAIFake(api_key=args.api_key)

    def announce(url: str) -> None:
        log.info("openai fake listening", url=url, hint="OPENAI_BASE_URL=" + url + "/v1")

    await fake.serve_until_signalled(args.host, args.port, announce)


def main() -> None:
    parser = argparse.ArgumentParser(description="A loopback OpenAI API for demos and tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8083)
    parser.add_argument("--api-key", default="test-openai-key")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
