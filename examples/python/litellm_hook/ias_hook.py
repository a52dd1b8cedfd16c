"""A LiteLLM proxy hook that authorizes every call with ias and charges its usage.

`IasHook` follows LiteLLM's `CustomLogger` interface:

- `async_pre_call_hook` runs before the model is called. It authorizes the
  caller's ias key for the requested model and estimated tokens; a denial
  raises an `HTTPException` with the status LiteLLM answers (401, 403 or 429
  with `Retry-After`), an allowed call keeps its reservation.
- `async_log_success_event` charges the reply's `usage.total_tokens` (the
  estimate when the reply has none).
- `async_log_failure_event` and `async_post_call_failure_hook` release the
  reservation: a failed call costs nothing.

Calls are matched by `litellm_call_id`, which LiteLLM carries from the
request data into the logging callbacks' `kwargs`.

The hook subclasses LiteLLM's `CustomLogger` when LiteLLM is installed, and
is a plain class otherwise, so that it can be imported and tested without it.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException

import ias

if TYPE_CHECKING:
    _Base = object
else:
    try:
        from litellm.integrations.custom_logger import CustomLogger as _Base
    except ImportError:  # LiteLLM is not installed: the tests call the hook directly.
        _Base = object

DEFAULT_COMPLETION_TOKENS = 1024
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
# Open reservations kept before the hook forgets those already settled or expired.
PRUNE_ABOVE = 10_000

KeyOf = Callable[[Any, dict[str, Any]], "str | None"]


def key_from_auth(user_api_key_dict: Any, data: dict[str, Any]) -> str | None:
    """The ias key LiteLLM authenticated the caller with (`UserAPIKeyAuth.api_key`).

    The proxy must pass the raw key on, as a custom auth function that accepts
    ias keys does; a proxy that keeps its own virtual keys would map them here.
    """
    key = getattr(user_api_key_dict, "api_key", None)
    return key if isinstance(key, str) else None


def estimate_tokens(data: dict[str, Any]) -> int:
    """The prompt's characters / 4 (+4 a message), plus the reply's allowance times `n`."""
    messages = data.get("messages")
    messages = messages if isinstance(messages, list) else []
    chars = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    prompt = math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages)
    allowance = data.get("max_completion_tokens") or data.get("max_tokens")
    if not isinstance(allowance, int):
        allowance = DEFAULT_COMPLETION_TOKENS
    choices = data.get("n")
    return prompt + allowance * (choices if isinstance(choices, int) and choices > 0 else 1)


def total_tokens(response_obj: Any) -> int | None:
    """`usage.total_tokens` of a LiteLLM response object or dict, if it has one."""
    usage = response_obj.get("usage") if isinstance(response_obj, dict) else None
    if usage is None:
        usage = getattr(response_obj, "usage", None)
    tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
    if tokens is None:
        tokens = getattr(usage, "total_tokens", None)
    return tokens if isinstance(tokens, int) and tokens >= 0 else None


def denial(decision: ias.Decision) -> HTTPException:
    """The HTTP answer LiteLLM gives for a denied call."""
    headers = {}
    if decision.retry_after is not None:
        headers["retry-after"] = str(decision.retry_after)
    elif decision.status_code == 429 and decision.reset_at is not None:
        left = decision.reset_at - datetime.now(timezone.utc)
        headers["retry-after"] = str(max(1, math.ceil(left.total_seconds())))
    detail = {"error": decision.message, "code": decision.reason}
    return HTTPException(status_code=decision.status_code, detail=detail, headers=headers)


class IasHook(_Base):
    """Authorizes LiteLLM proxy calls before they run and settles them after."""

    def __init__(self, governor: ias.Governor, key_of: KeyOf = key_from_auth) -> None:
        super().__init__()
        self.governor = governor
        self.key_of = key_of
        self.open: dict[str, ias.Decision] = {}

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: str
    ) -> dict[str, Any]:
        """Authorizes the call; raises `HTTPException` (401, 403, 429) when denied."""
        key = self.key_of(user_api_key_dict, data) or ""
        model = data.get("model")
        if not isinstance(model, str):
            raise HTTPException(status_code=400, detail={"error": "`model` must be a string"})
        try:
            decision = await self.governor.authorize_async(key, model, estimate_tokens(data))
        except ias.InvalidInputError as err:
            raise HTTPException(status_code=400, detail={"error": str(err)}) from err
        if not decision.allowed:
            raise denial(decision)
        call_id = data.setdefault("litellm_call_id", str(uuid.uuid4()))
        self.prune()
        self.open[str(call_id)] = decision
        return data

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Charges what the call used: `usage.total_tokens`, else the estimate."""
        decision = self.open.pop(str(kwargs.get("litellm_call_id")), None)
        if decision is None or decision.reservation is None:
            return
        tokens = total_tokens(response_obj)
        await decision.settle_async(tokens if tokens is not None else decision.requested)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Releases the reservation of a call that failed."""
        await self.release(kwargs.get("litellm_call_id"))

    async def async_post_call_failure_hook(
        self,
        request_data: dict[str, Any],
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> None:
        """Releases the reservation of a call the proxy failed before or after the model."""
        await self.release(request_data.get("litellm_call_id"))

    async def release(self, call_id: object) -> None:
        """Releases the reservation of `call_id`, if it is still open."""
        decision = self.open.pop(str(call_id), None)
        reservation = decision.reservation if decision is not None else None
        if decision is not None and reservation is not None and reservation.open:
            try:
                await decision.release_async()
            except ias.NotFoundError:
                pass  # released already, after its time to live

    def prune(self) -> None:
        """Forgets reservations no callback came for, once they expired."""
        if len(self.open) <= PRUNE_ABOVE:
            return
        now = datetime.now(timezone.utc)
        for call_id, decision in list(self.open.items()):
            reservation = decision.reservation
            if reservation is None or not reservation.open or reservation.expires_at <= now:
                del self.open[call_id]
