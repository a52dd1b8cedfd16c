"""An OpenAI-compatible chat route governed by ias, as a Starlette middleware.

`IasMiddleware` decides every `POST /v1/chat/completions` before the route
runs: a bad key answers 401, a model the organization may not call 403, a
spent budget or a reached rate limit 429 with `Retry-After`, all in
OpenAI's error shape so that OpenAI clients raise their usual exceptions.
An allowed request reserves its estimated tokens; when the route answers,
the middleware charges the `usage.total_tokens` of its reply, or releases
the reservation if the route failed.

The route itself knows nothing of ias. Here it answers from a small mock
model; a real gateway forwards the request to its provider instead.

Run it (with `pip install uvicorn`):

    IAS_DATABASE_URL=sqlite://$PWD/ias.db uvicorn --factory app:create_app_from_env
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timezone
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.types import ASGIApp

import ias

CHAT_PATH = "/v1/chat/completions"
DEFAULT_COMPLETION_TOKENS = 1024
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4

ChatModel = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def estimate_tokens(body: dict[str, Any]) -> int:
    """The prompt's characters / 4 (+4 a message), plus the reply's allowance times `n`."""
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    chars = sum(len(text) for message in messages for text in message_texts(message))
    prompt = math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages)
    allowance = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(allowance, int):
        allowance = DEFAULT_COMPLETION_TOKENS
    choices = body.get("n")
    return prompt + allowance * (choices if isinstance(choices, int) and choices > 0 else 1)


def message_texts(message: object) -> list[str]:
    """The text of a message: a string `content`, or the `text` of each part."""
    if not isinstance(message, dict):
        return []
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def openai_error(
    status: int, kind: str, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error answer in OpenAI's shape."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def denial_response(decision: ias.Decision) -> JSONResponse:
    """401, 403 or 429 for a denied decision, with `Retry-After` on a 429."""
    reason = decision.reason or "denied"
    message = decision.message or reason
    if decision.status_code == 401:
        return openai_error(401, "authentication_error", reason, message)
    if decision.status_code == 403:
        return openai_error(403, "permission_error", reason, message)
    kind = "rate_limit_exceeded" if reason == "rate_limited" else "insufficient_quota"
    return openai_error(429, kind, reason, message, headers=retry_headers(decision))


def retry_headers(decision: ias.Decision) -> dict[str, str]:
    """`Retry-After` in whole seconds: the denial's own, else until the limit resets."""
    seconds = decision.retry_after
    if seconds is None and decision.reset_at is not None:
        left = decision.reset_at - datetime.now(timezone.utc)
        seconds = max(1, math.ceil(left.total_seconds()))
    return {"retry-after": str(seconds)} if seconds is not None else {}


def bearer_key(request: Request) -> str | None:
    """The key from `Authorization: Bearer <key>`, if the header has that shape."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


class IasMiddleware(BaseHTTPMiddleware):
    """Authorizes chat completions before the route, and charges their usage after."""

    def __init__(self, app: ASGIApp, governor: ias.Governor, path: str = CHAT_PATH) -> None:
        super().__init__(app)
        self.governor = governor
        self.path = path

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.method != "POST" or request.url.path != self.path:
            return await call_next(request)
        key = bearer_key(request)
        if key is None:
            message = "missing API key: send `Authorization: Bearer <ias key>`"
            return openai_error(401, "authentication_error", "missing_api_key", message)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return openai_error(400, "invalid_request_error", "invalid_json", "body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            message = "`model` must be a string"
            return openai_error(400, "invalid_request_error", "invalid_value", message)

        try:
            decision = await self.governor.authorize_async(key, body["model"], estimate_tokens(body))
        except ias.InvalidInputError as err:
            return openai_error(400, "invalid_request_error", "invalid_value", str(err))
        except ias.UnavailableError:
            message = "the governance store is unavailable; try again later"
            return openai_error(503, "server_error", "store_unavailable", message, {"retry-after": "1"})
        if not decision.allowed:
            return denial_response(decision)

        # Leaving the block releases the reservation if the route raised, and
        # charges the estimate if nothing settled it (a streamed reply).
        async with decision:
            response = await call_next(request)
            if response.status_code >= 400:
                await decision.release_async()
                return response
            return await self.settle_from_reply(decision, response)

    async def settle_from_reply(self, decision: ias.Decision, response: Response) -> Response:
        """Charges the reply's `usage.total_tokens`; the reply goes out unchanged."""
        if not response.headers.get("content-type", "").startswith("application/json"):
            return response
        chunks = [chunk async for chunk in body_chunks(response)]
        content = b"".join(chunks)
        tokens = total_tokens(content)
        if tokens is not None:
            await decision.settle_async(tokens)
        headers = dict(response.headers)
        headers.pop("content-length", None)
        if decision.remaining is not None:
            headers["x-ias-remaining-tokens"] = str(decision.remaining)
        return Response(content, status_code=response.status_code, headers=headers)


async def body_chunks(response: Response) -> AsyncIterator[bytes]:
    """The bytes of a response that `call_next` returned (a streaming response)."""
    iterator = getattr(response, "body_iterator", None)
    if iterator is None:
        yield bytes(response.body)
        return
    async for chunk in iterator:
        yield chunk if isinstance(chunk, bytes) else str(chunk).encode()


def total_tokens(content: bytes) -> int | None:
    """`usage.total_tokens` of an OpenAI reply, if it has one."""
    try:
        usage = json.loads(content).get("usage") or {}
    except (ValueError, AttributeError):
        return None
    tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and tokens >= 0 else None


async def mock_model(body: dict[str, Any]) -> dict[str, Any]:
    """A deterministic stand-in for a provider: a fixed reply and its usage."""
    reply = "This is a deterministic reply from the ias FastAPI example."
    prompt_tokens = estimate_tokens({**body, "max_tokens": 0})
    completion_tokens = math.ceil(len(reply) / CHARS_PER_TOKEN)
    return {
        "id": "chatcmpl-ias-example",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(
    governor: ias.Governor, model: ChatModel = mock_model, lifespan: Lifespan | None = None
) -> FastAPI:
    """The app: one governed chat route, answered by `model`."""
    app = FastAPI(title="ias FastAPI example", lifespan=lifespan)
    app.add_middleware(IasMiddleware, governor=governor)

    @app.post(CHAT_PATH)
    async def chat_completions(request: Request) -> dict[str, Any]:
        body: dict[str, Any] = await request.json()
        return await model(body)

    return app


def create_app_from_env() -> FastAPI:
    """The app over `IAS_DATABASE_URL` (default `sqlite://./ias.db`), closed on shutdown."""
    governor = ias.open(os.environ.get("IAS_DATABASE_URL", "sqlite://./ias.db"))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await governor.close_async()  # writes the usage still held in memory

    return create_app(governor, lifespan=lifespan)
