"""A loopback Anthropic Messages API, as the anthropic SDK expects it (shared/apis.md section 3).

- `POST /v1/messages`; the SDK's base URL is the server root (no `/v1`).
- Auth: `x-api-key: KEY` (SDK 0.x) or `Authorization: Bearer KEY` (SDK 2.x); anything else is
  401 `authentication_error`. `anthropic-version` is recorded, never pinned.
- Answers: a `message` with `tool_use` blocks (or text), `stop_reason`, `usage`; errors in the
  API's shape `{"type":"error","error":{"type","message"}}`.
- Scripted per test through `script` (see model_script.py), plus the faults of LoopbackServer:
  `inject("POST", "/v1/messages", status=500)`, `delay=` past the client's timeout, `drop=`.

Run it for a demo: `python -m tests.fakes.anthropic_server --port 8082 --api-key test-key`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
from typing import Any

import structlog
from aiohttp import web

from tests.fakes.loopback import LoopbackServer
from tests.fakes.model_script import ModelScript, Scripted, estimate_tokens

log = structlog.get_logger(__name__)

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _STATUS_TYPES.get(status, "api_error"), "message": message}}


class AnthropicFake(LoopbackServer):
    def __init__(self, api_key: str = "test-anthropic-key") -> None:
        self.api_key = api_key
        self.script = ModelScript()
        #: models that answer a forced tool_choice with 400, as Sonnet 5.5, Opus 5.5 and Fable 5.1 do
        self.refuse_forced_tool_choice = {"claude-sonnet-5-5", "claude-opus-5-5", "claude-fable-5-1"}
        #: answer with a thinking block before the tool call, as models with adaptive thinking do
        self.thinking = False
        #: what GET /v1/models lists
        self.models = ["claude-sonnet-4-6", "claude-opus-4-6", "claude-haiku-4-5"]
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)

    def fault_body(self, status: int) -> Any:
        return error_body(status, f"injected {status}")

    def auth_header_used(self, index: int = -1) -> str:
        """Which header carried the key on a recorded request: "x-api-key" or "authorization"."""
        headers = {name.lower(): value for name, value in self.requests[index].headers.items()}
        return "x-api-key" if "x-api-key" in headers else "authorization"

    def _authorized(self, request: web.Request) -> bool:
        if request.headers.get("x-api-key") == self.api_key:
            return True
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _models(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/models` (`limit`, newest first): `{data, has_more, first_id, last_id}`."""
        if not self._authorized(request):
            return web.json_response(error_body(401, "invalid x-api-key"), status=401)
        limit = int(request.query.get("limit", "20"))
        data = [
            {"type": "model", "id": model, "display_name": model, "created_at": "2026-01-01T00:00:00Z"}
            for model in self.models[:limit]
        ]
        return web.json_response(
            {
                "data": data,
                "has_more": len(self.models) > limit,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response(error_body(401, "invalid x-api-key"), status=401)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response(error_body(400, "The request body is not valid JSON."), status=400)
        missing = [name for name in ("model", "max_tokens", "messages") if name not in body]
        if missing:
            return web.json_response(error_body(400, f"{missing[0]}: Field required"), status=400)
        choice = body.get("tool_choice") or {}
        if body["model"] in self.refuse_forced_tool_choice and choice.get("type") in ("tool", "any"):
            message = "tool_choice: forcing tool use is not supported with this model; use tool_choice auto."
            return web.json_response(error_body(400, message), status=400)
        tools = {tool.get("name") for tool in body.get("tools", [])}
        prompt_text = _last_user_text(body)
        scripted = self.script.next(prompt_text, body)
        if scripted.kind == "raw":
            return web.Response(
                text=str(scripted.value), status=scripted.status, content_type=scripted.content_type
            )
        content, stop = _content(scripted, tools)
        if self.thinking:
            content.insert(
                0,
                {
                    "type": "thinking",
                    "thinking": "Which action fits this message?",
                    "signature": secrets.token_hex(16),
                },
            )
        input_tokens, output_tokens = scripted.usage or (
            estimate_tokens(json.dumps(body)),
            estimate_tokens(json.dumps(content)),
        )
        return web.json_response(
            {
                "id": f"msg_{secrets.token_hex(12)}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": content,
                "stop_reason": scripted.stop or stop,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            }
        )


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _tool_use(name: str, value: dict[str, Any] | str) -> dict[str, Any]:
    # Tool input is always a JSON object on this API; a str is parsed if it can be, else sent as text.
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {"type": "text", "text": value}
    return {"type": "tool_use", "id": f"toolu_{secrets.token_hex(12)}", "name": name, "input": value}


def _content(scripted: Scripted, tools: set[Any]) -> tuple[list[dict[str, Any]], str]:
    if scripted.kind == "text":
        return [{"type": "text", "text": str(scripted.value)}], "end_turn"
    if scripted.kind == "calls":
        return [_tool_use(name, value) for name, value in scripted.value], "tool_use"
    name = next(iter(tools)) if len(tools) == 1 else "propose_plan"
    return [_tool_use(str(name), scripted.value)], "tool_use"


async def _serve(args: argparse.Namespace) -> None:
    fake = AnthropicFake(api_key=args.api_key)

    def announce(url: str) -> None:
        log.info("anthropic fake listening", url=url, hint="ANTHROPIC_BASE_URL=" + url)

    await fake.serve_until_signalled(args.host, args.port, announce)


def main() -> None:
    parser = argparse.ArgumentParser(description="A loopback Anthropic Messages API for demos and tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--api-key", default="test-anthropic-key")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
