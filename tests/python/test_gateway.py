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
import signal
import string
import time
from typing import Callable

import httpx2
import openai
import pytest

from harness import MODEL, FakeUpstream, Gateway, StreamingUpstream

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


def test_a_stream_arrives_in_chunks_and_its_usage_is_charged(gateway: Gateway) -> None:
    gateway.create_org("acme", budget=1_000_000)
    client = gateway.client(gateway.create_user("acme", "ann@acme.example.com"))

    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=10,
        stream=True,
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices]) > 3
    assert text.startswith("This is a deterministic reply")
    # The gateway asked for the usage in the last chunk, and charged it.
    usage = chunks[-1].usage
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + 10
    assert gateway.org_used("acme") == usage.total_tokens
    assert gateway.metric("ias_gateway_open_reservations") == 0


def test_every_inference_route_answers_and_is_charged(gateway: Gateway) -> None:
    gateway.create_org("acme", budget=1_000_000)
    client = gateway.client(gateway.create_user("acme", "ann@acme.example.com"))

    completion = client.completions.create(model=MODEL, prompt="hello", max_tokens=5)
    embeddings = client.embeddings.create(model=MODEL, input=["hello", "world"])
    response = client.responses.create(model=MODEL, input="hello", max_output_tokens=4)
    events = list(
        client.responses.create(model=MODEL, input="hello", max_output_tokens=3, stream=True)
    )
    legacy_stream = list(
        client.completions.create(model=MODEL, prompt="hello", max_tokens=2, stream=True)
    )

    assert completion.choices[0].text == "This is a deterministic reply"
    assert len(embeddings.data) == 2 and embeddings.usage.total_tokens == 4
    assert response.output_text == "This is a deterministic"
    assert events[-1].type == "response.completed"
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed == "This is a"
    assert legacy_stream[-1].usage is not None
    charged = [
        completion.usage.total_tokens if completion.usage else 0,
        embeddings.usage.total_tokens,
        response.usage.total_tokens if response.usage else 0,
        events[-1].response.usage.total_tokens if events[-1].response.usage else 0,
        legacy_stream[-1].usage.total_tokens,
    ]
    assert all(tokens > 0 for tokens in charged)
    assert gateway.org_used("acme") == sum(charged)


def test_models_lists_only_the_allowed_models(gateway: Gateway) -> None:
    gateway.create_org("acme", budget=1_000_000, models=(MODEL, "text-embedding-3-small"))
    client = gateway.client(gateway.create_user("acme", "ann@acme.example.com"))

    models = sorted(model.id for model in client.models.list())

    assert models == [MODEL, "text-embedding-3-small"]


def test_an_exhausted_org_is_refused_on_every_inference_route(gateway: Gateway) -> None:
    # One small chat completion costs 16 tokens with the mock: the whole budget.
    gateway.create_org("acme", budget=16)
    client = gateway.client(gateway.create_user("acme", "ann@acme.example.com"))
    first = ask(client)
    assert first.usage is not None and first.usage.total_tokens == 16
    hello = [{"role": "user", "content": "hello"}]
    calls = {
        "chat": lambda: client.chat.completions.create(model=MODEL, messages=hello, max_tokens=5),
        "chat stream": lambda: client.chat.completions.create(
            model=MODEL, messages=hello, max_tokens=5, stream=True
        ),
        "completions": lambda: client.completions.create(model=MODEL, prompt="hi", max_tokens=5),
        "embeddings": lambda: client.embeddings.create(model=MODEL, input="hi"),
        "responses": lambda: client.responses.create(
            model=MODEL, input="hi", max_output_tokens=5
        ),
    }
    for name, call in calls.items():
        with pytest.raises(openai.RateLimitError) as refused:
            call()
        assert refused.value.code == "org_budget_exhausted", name
        assert retry_after(refused.value) >= 1, name
        assert refused.value.response.headers["x-should-retry"] == "false", name
    assert gateway.org_used("acme") == 16


def test_a_model_not_allowed_is_refused_on_every_inference_route(gateway: Gateway) -> None:
    gateway.create_org("acme", budget=1_000_000)
    client = gateway.client(gateway.create_user("acme", "ann@acme.example.com"))
    other = "gpt-4o"
    calls = [
        lambda: client.completions.create(model=other, prompt="hi", max_tokens=5),
        lambda: client.embeddings.create(model=other, input="hi"),
        lambda: client.responses.create(model=other, input="hi", max_output_tokens=5),
        lambda: client.chat.completions.create(
            model=other, messages=[{"role": "user", "content": "hi"}], stream=True
        ),
    ]
    for call in calls:
        with pytest.raises(openai.PermissionDeniedError) as refused:
            call()
        assert refused.value.code == "model_not_allowed"
    assert gateway.org_used("acme") == 0


def test_a_client_that_hangs_up_mid_stream_is_charged_what_was_produced(
    start_gateway: Callable[..., Gateway],
) -> None:
    words = [f"word{i:02} " for i in range(40)]
    with StreamingUpstream(words, delay_s=0.1) as upstream:
        gateway = start_gateway({"IAS_UPSTREAM_URL": upstream.base_url})
        gateway.create_org("acme", budget=1_000_000)
        client = gateway.client(gateway.create_user("acme", "ann@acme.example.com"))
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=100,
            stream=True,
        )
        first = next(iter(stream))
        assert first.choices[0].delta.content == words[0]
        assert gateway.metric("ias_gateway_open_reservations") == 1

        stream.close()

        assert gateway.wait_for_metric("ias_gateway_open_reservations", 0) == 0
        assert upstream.disconnected.wait(5), "the gateway kept the upstream stream open"
        assert upstream.requests[0]["stream_options"] == {"include_usage": True}
    used = gateway.org_used("acme")
    # The prompt ("hello": 6) and the words that went through, at 4
    # characters a token: more than none, less than the whole answer.
    assert 6 + 2 <= used < upstream.total_tokens
    assert gateway.stop() == 0
    assert gateway.org_reserved("acme") == 0
    assert gateway.org_used("acme") == used


def test_a_stream_in_flight_at_sigterm_finishes_and_is_charged(
    start_gateway: Callable[..., Gateway],
) -> None:
    words = ["one ", "two ", "three ", "four ", "five"]
    with StreamingUpstream(words, delay_s=0.3) as upstream:
        gateway = start_gateway({"IAS_UPSTREAM_URL": upstream.base_url})
        gateway.create_org("acme", budget=1_000_000)
        client = gateway.client(gateway.create_user("acme", "ann@acme.example.com"))
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}], stream=True
        )
        chunks = iter(stream)
        next(chunks)

        gateway.process.terminate()
        rest = list(chunks)

    assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices) == "".join(
        words[1:]
    )
    assert rest[-1].usage is not None
    assert gateway.process.wait(10) == 0
    assert gateway.org_used("acme") == upstream.total_tokens
    assert gateway.org_reserved("acme") == 0


def test_a_stream_past_the_grace_period_is_cut_off_and_charged(
    start_gateway: Callable[..., Gateway],
) -> None:
    words = [f"word{i:02} " for i in range(100)]
    with StreamingUpstream(words, delay_s=0.1) as upstream:
        gateway = start_gateway(
            {"IAS_UPSTREAM_URL": upstream.base_url}, args=["--shutdown-grace", "1"]
        )
        gateway.create_org("acme", budget=1_000_000)
        client = gateway.client(gateway.create_user("acme", "ann@acme.example.com"))
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}], stream=True
        )
        chunks = iter(stream)
        next(chunks)
        stopped_at = time.monotonic()

        gateway.process.terminate()
        with pytest.raises((httpx2.HTTPError, openai.APIError)):
            for _ in chunks:
                pass

    assert gateway.process.wait(10) == 0
    assert time.monotonic() - stopped_at < 8
    assert "cutting off the requests still open" in gateway.log()
    used = gateway.org_used("acme")
    assert 6 < used < upstream.total_tokens
    assert gateway.org_reserved("acme") == 0


def test_gateway_stops_cleanly_on_sigterm(gateway: Gateway) -> None:
    assert gateway.stop() == 0
    assert "ias-gateway stopped" in gateway.log()


def test_ctrl_c_writes_the_last_usage_and_gives_back_what_was_held(gateway: Gateway) -> None:
    gateway.create_org("acme", budget=1_000_000)
    key = gateway.create_user("acme", "ann@acme.example.com")
    spent = 0
    for _ in range(3):
        completion = ask(gateway.client(key))
        assert completion.usage is not None
        spent += completion.usage.total_tokens
    # While it runs, the governor holds a lease on the budget; Ctrl-C is SIGINT.
    assert gateway.org_reserved("acme") > 0
    gateway.process.send_signal(signal.SIGINT)
    assert gateway.process.wait(10) == 0
    assert "ias-gateway stopped" in gateway.log()
    assert gateway.org_reserved("acme") == 0
    assert gateway.org_used("acme") == spent


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
