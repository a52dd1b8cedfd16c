"""ias-gateway end to end: the official OpenAI client against a governed gateway.

Setup goes through `ias-admin`; requests go through `openai.OpenAI`. Every
request here is the same small one (see `ask`), so each costs the same
number of tokens with the mock upstream; the tests still read the real cost
from the answers' `usage` rather than assuming it.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import time
from typing import Callable

import openai
import pytest

from harness import MODEL, FakeUpstream, Gateway

# A change made by `ias-admin` is enforced by a running gateway within 1 s;
# the test allows scheduling slack on a loaded machine.
REVOCATION_DEADLINE_S = 2.0

# Enough requests to spend any budget used below; a test fails past this.
MAX_REQUESTS = 50


def ask(client: openai.OpenAI, model: str = MODEL):
    """One small chat completion."""
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=10,
    )


def spend_until_refused(client: openai.OpenAI) -> tuple[int, openai.RateLimitError]:
    """Sends requests until one is refused with 429; returns the tokens charged before it."""
    spent = 0
    for _ in range(MAX_REQUESTS):
        try:
            completion = ask(client)
        except openai.RateLimitError as refused:
            return spent, refused
        assert completion.usage is not None
        spent += completion.usage.total_tokens
    pytest.fail(f"still allowed after {MAX_REQUESTS} requests ({spent} tokens)")


def retry_after(error: openai.APIStatusError) -> int:
    return int(error.response.headers["retry-after"])


def test_allowed_model_answers_and_its_usage_is_recorded(gateway: Gateway) -> None:
    gateway.create_org("acme", budget=1_000_000)
    key = gateway.create_user("acme", "ann@acme.example.com", role="org_admin")

    completion = ask(gateway.client(key))

    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert completion.usage.completion_tokens <= 10
    assert gateway.org_used("acme") == completion.usage.total_tokens
    assert gateway.user_used("acme", "ann@acme.example.com") == completion.usage.total_tokens
    # On SIGTERM the gateway writes its last usage and gives back what it held.
    assert gateway.stop() == 0
    assert gateway.org_reserved("acme") == 0
    assert gateway.org_used("acme") == completion.usage.total_tokens
    assert key not in gateway.log()


def test_model_not_allowed_is_permission_denied(gateway: Gateway) -> None:
    gateway.create_org("acme", budget=1_000_000)
    key = gateway.create_user("acme", "ann@acme.example.com")

    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(gateway.client(key), model="gpt-4o")

    assert refused.value.code == "model_not_allowed"
    assert "gpt-4o" in refused.value.message
    assert gateway.org_used("acme") == 0


def test_exhausted_org_budget_is_rate_limited(gateway: Gateway) -> None:
    budget = 100
    gateway.create_org("acme", budget=budget)
    client = gateway.client(gateway.create_user("acme", "ann@acme.example.com"))

    spent, refused = spend_until_refused(client)

    assert spent > 0
    assert refused.code == "org_budget_exhausted"
    assert retry_after(refused) >= 1
    assert gateway.org_used("acme") == spent <= budget
    with pytest.raises(openai.RateLimitError) as again:
        ask(client)
    assert again.value.code == "org_budget_exhausted"
    assert gateway.org_used("acme") == spent


def test_exhausted_user_limit_is_rate_limited_while_the_org_has_budget(
    gateway: Gateway,
) -> None:
    limit = 40
    gateway.create_org("acme", budget=1_000_000)
    limited = gateway.client(gateway.create_user("acme", "lim@acme.example.com", limit=limit))
    other = gateway.client(gateway.create_user("acme", "other@acme.example.com"))

    spent, refused = spend_until_refused(limited)

    assert refused.code == "user_limit_exhausted"
    assert retry_after(refused) >= 1
    assert 0 < spent <= limit
    assert gateway.user_used("acme", "lim@acme.example.com") == spent
    completion = ask(other)
    assert completion.usage is not None
    assert gateway.org_used("acme") == spent + completion.usage.total_tokens


def test_user_without_own_limit_is_bounded_by_the_org_budget_alone(gateway: Gateway) -> None:
    budget, capped_limit = 200, 40
    gateway.create_org("acme", budget=budget)
    gateway.create_user("acme", "capped@acme.example.com", limit=capped_limit)
    unlimited = gateway.client(gateway.create_user("acme", "free@acme.example.com"))

    spent, refused = spend_until_refused(unlimited)

    assert refused.code == "org_budget_exhausted"
    assert spent > capped_limit
    assert gateway.user_used("acme", "free@acme.example.com") == spent
    assert gateway.org_used("acme") == spent <= budget


def test_revoked_key_is_an_authentication_error(gateway: Gateway) -> None:
    gateway.create_org("acme", budget=1_000_000)
    kept = gateway.client(gateway.create_user("acme", "ann@acme.example.com"))
    created = gateway.create_key("ann@acme.example.com")
    revoked = gateway.client(created["secret"])
    ask(revoked)

    gateway.admin("key", "revoke", "--key-id", str(created["id"]))

    # A revocation made by another process reaches the running gateway
    # through the change feed, which it reads every second.
    revoked_at = time.monotonic()
    with pytest.raises(openai.AuthenticationError) as refused:
        while time.monotonic() - revoked_at < REVOCATION_DEADLINE_S:
            ask(revoked)
            time.sleep(0.05)
    assert refused.value.code == "revoked_key"
    ask(kept)


@pytest.mark.parametrize(
    "key",
    [
        "ias_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40)),
        "sk-not-an-ias-key",
    ],
    ids=["unknown-ias-key", "foreign-key"],
)
def test_unknown_key_is_an_authentication_error(gateway: Gateway, key: str) -> None:
    gateway.create_org("acme", budget=1_000_000)

    with pytest.raises(openai.AuthenticationError) as refused:
        ask(gateway.client(key))

    assert refused.value.code == "invalid_key"
    assert gateway.org_used("acme") == 0


def test_streaming_is_refused_without_holding_tokens(gateway: Gateway) -> None:
    gateway.create_org("acme", budget=1_000_000)
    client = gateway.client(gateway.create_user("acme", "ann@acme.example.com"))

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}], stream=True
        )

    assert refused.value.code == "stream_not_supported"
    assert gateway.org_used("acme") == 0
    assert gateway.org_reserved("acme") == 0


def test_gateway_stops_cleanly_on_sigterm(gateway: Gateway) -> None:
    assert gateway.stop() == 0
    assert "ias-gateway stopped" in gateway.log()


def test_an_http_upstream_gets_its_own_key_and_its_usage_is_charged(
    start_gateway: Callable[..., Gateway],
) -> None:
    usage = {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
    answer = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "from the upstream"},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }
    upstream_key = "sk-upstream-test"
    with FakeUpstream(answer) as upstream:
        env = {"IAS_UPSTREAM_URL": upstream.base_url, "IAS_UPSTREAM_API_KEY": upstream_key}
        gateway = start_gateway(env)
        gateway.create_org("acme", budget=1_000_000)
        key = gateway.create_user("acme", "ann@acme.example.com")

        completion = ask(gateway.client(key))

    assert completion.choices[0].message.content == "from the upstream"
    assert gateway.org_used("acme") == 42
    ((path, authorization, body),) = upstream.requests
    assert path == "/v1/chat/completions"
    assert authorization == f"Bearer {upstream_key}"
    assert json.loads(body)["model"] == MODEL
    assert key not in gateway.log() and upstream_key not in gateway.log()


def test_demo_prints_a_working_key_on_first_start_only(
    start_gateway: Callable[..., Gateway],
) -> None:
    key_pattern = re.compile(r"ias_[A-Za-z0-9]{40}")
    first = start_gateway(args=["--demo"])
    printed = key_pattern.search(first.log())
    assert printed is not None, first.log()
    assert f"Authorization: Bearer {printed.group(0)}" in first.log()

    completion = ask(first.client(printed.group(0)))

    assert completion.usage is not None
    assert first.org_used("demo") == completion.usage.total_tokens
    assert first.stop() == 0
    second = start_gateway(args=["--demo"])
    assert "already exists" in second.log()
    assert "ias-admin" in second.log() and "key create --email demo@example.com" in second.log()
    assert key_pattern.search(second.log()) is None
