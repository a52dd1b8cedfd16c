"""The LiteLLM hook (examples/python/litellm_hook), called with the shapes LiteLLM passes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import HTTPException

import ias
from conftest import MEMBER, MEMBER_LIMIT, MODEL, ORG, Team
from ias_hook import IasHook

pytestmark = pytest.mark.asyncio


def request_data(model: str = MODEL, **fields: Any) -> dict[str, Any]:
    """What the proxy hands `async_pre_call_hook` as `data`."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Hello!"}],
        "litellm_call_id": "call-1",
        "metadata": {},
        "max_tokens": 100,
        **fields,
    }


def auth(key: str) -> SimpleNamespace:
    """Stands in for LiteLLM's `UserAPIKeyAuth`."""
    return SimpleNamespace(api_key=key)


def response(total_tokens: int) -> SimpleNamespace:
    """Stands in for LiteLLM's `ModelResponse`: only `usage` is read."""
    return SimpleNamespace(usage=SimpleNamespace(total_tokens=total_tokens))


async def test_success_settles_the_real_usage(governor: ias.Governor, team: Team) -> None:
    hook = IasHook(governor)
    data = request_data(max_tokens=100)
    assert await hook.async_pre_call_hook(auth(team.key), None, data, "completion") is data
    assert governor.stats().open_reservations == 1
    kwargs = {"litellm_call_id": "call-1", "litellm_params": {"metadata": data["metadata"]}}
    await hook.async_log_success_event(kwargs, response(42), None, None)
    await governor.flush_async()
    assert (await governor.usage_async(ORG)).used == 42
    assert governor.stats().open_reservations == 0 and hook.open == {}


async def test_dict_responses_and_missing_usage(governor: ias.Governor, team: Team) -> None:
    hook = IasHook(governor)
    for call_id, reply in [("a", {"usage": {"total_tokens": 7}}), ("b", {})]:
        data = request_data(litellm_call_id=call_id)
        await hook.async_pre_call_hook(auth(team.key), None, data, "completion")
        await hook.async_log_success_event({"litellm_call_id": call_id}, reply, None, None)
    await governor.flush_async()
    # Without usage in the reply, the estimate is charged: 2 + 4 prompt tokens + 100.
    assert (await governor.usage_async(ORG)).used == 7 + 106


async def test_failure_releases(governor: ias.Governor, team: Team) -> None:
    hook = IasHook(governor)
    await hook.async_pre_call_hook(auth(team.key), None, request_data(), "completion")
    await hook.async_log_failure_event({"litellm_call_id": "call-1"}, None, None, None)
    data = request_data(litellm_call_id="call-2")
    await hook.async_pre_call_hook(auth(team.key), None, data, "completion")
    await hook.async_post_call_failure_hook(data, RuntimeError("boom"), auth(team.key))
    await hook.async_post_call_failure_hook(data, RuntimeError("again"), auth(team.key))
    await governor.flush_async()
    assert (await governor.usage_async(ORG)).used == 0
    assert governor.stats().open_reservations == 0


async def test_denials_raise_http_errors(governor: ias.Governor, team: Team) -> None:
    hook = IasHook(governor)
    cases = [
        (auth("ias_wrong"), request_data(), 401, "invalid_key"),
        (SimpleNamespace(), request_data(), 401, "invalid_key"),
        (auth(team.key), request_data(model="gpt-4o"), 403, "model_not_allowed"),
        (auth(team.key), request_data(max_tokens=MEMBER_LIMIT), 429, "user_limit_exhausted"),
    ]
    for user, data, status, code in cases:
        with pytest.raises(HTTPException) as raised:
            await hook.async_pre_call_hook(user, None, data, "completion")
        assert raised.value.status_code == status
        assert isinstance(raised.value.detail, dict) and raised.value.detail["code"] == code
    assert hook.open == {}
    assert governor.stats().open_reservations == 0


async def test_rate_limit_denial_carries_retry_after(governor: ias.Governor, team: Team) -> None:
    await governor.set_rate_limits_async(ORG, email=MEMBER, rpm=1)
    hook = IasHook(governor)
    await hook.async_pre_call_hook(auth(team.key), None, request_data(max_tokens=5), "completion")
    with pytest.raises(HTTPException) as raised:
        data = request_data(max_tokens=5, litellm_call_id="call-2")
        await hook.async_pre_call_hook(auth(team.key), None, data, "completion")
    assert raised.value.status_code == 429
    assert raised.value.headers is not None and int(raised.value.headers["retry-after"]) >= 1


async def test_a_call_id_is_added_when_missing(governor: ias.Governor, team: Team) -> None:
    hook = IasHook(governor)
    data = request_data()
    del data["litellm_call_id"]
    await hook.async_pre_call_hook(auth(team.key), None, data, "completion")
    assert data["litellm_call_id"] in hook.open
