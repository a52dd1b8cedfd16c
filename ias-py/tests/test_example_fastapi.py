"""The FastAPI example (examples/python/fastapi_gateway): 200, 401, 403 and 429."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

import ias
from app import CHAT_PATH, create_app, estimate_tokens
from conftest import MEMBER, MEMBER_LIMIT, MODEL, ORG, Team


@pytest.fixture
def client(governor: ias.Governor, team: Team) -> Iterator[TestClient]:
    with TestClient(create_app(governor)) as client:
        yield client


def chat(client: TestClient, key: str | None, model: str = MODEL, **fields: Any) -> Any:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    body = {"model": model, "messages": [{"role": "user", "content": "Hello!"}], **fields}
    return client.post(CHAT_PATH, json=body, headers=headers)


def test_allowed_request_is_answered_and_charged(
    client: TestClient, governor: ias.Governor, team: Team
) -> None:
    response = chat(client, team.key, max_tokens=50)
    assert response.status_code == 200
    reply = response.json()
    assert reply["choices"][0]["message"]["role"] == "assistant"
    used = reply["usage"]["total_tokens"]
    assert 0 < used < 50
    assert int(response.headers["x-ias-remaining-tokens"]) <= MEMBER_LIMIT - used
    governor.flush()
    assert governor.usage(ORG, MEMBER).used == used
    assert governor.stats().open_reservations == 0


def test_missing_and_invalid_keys_answer_401(client: TestClient) -> None:
    missing = chat(client, None)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    invalid = chat(client, "ias_not_a_real_key")
    assert invalid.status_code == 401
    assert invalid.json()["error"] == {
        "message": "invalid API key",
        "type": "authentication_error",
        "param": None,
        "code": "invalid_key",
    }


def test_model_not_allowed_answers_403(client: TestClient, team: Team) -> None:
    response = chat(client, team.key, model="gpt-4o")
    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "model_not_allowed")
    assert "gpt-4o" in error["message"]


def test_spent_limit_answers_429_with_retry_after(client: TestClient, team: Team) -> None:
    response = chat(client, team.key, max_tokens=MEMBER_LIMIT)
    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "user_limit_exhausted")
    assert int(response.headers["retry-after"]) >= 1


def test_rate_limit_answers_429(client: TestClient, governor: ias.Governor, team: Team) -> None:
    governor.set_rate_limits(ORG, email=MEMBER, rpm=1)
    assert chat(client, team.key, max_tokens=10).status_code == 200
    response = chat(client, team.key, max_tokens=10)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["retry-after"]) <= 60


def test_a_failing_route_costs_nothing(governor: ias.Governor, team: Team) -> None:
    async def broken_model(body: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("upstream unreachable")

    with TestClient(create_app(governor, broken_model), raise_server_exceptions=False) as client:
        assert chat(client, team.key, max_tokens=50).status_code == 500
    governor.flush()
    assert governor.usage(ORG).used == 0
    assert governor.stats().open_reservations == 0


def test_bad_bodies_answer_400(client: TestClient, team: Team) -> None:
    headers = {"authorization": f"Bearer {team.key}"}
    assert client.post(CHAT_PATH, content=b"{", headers=headers).status_code == 400
    assert client.post(CHAT_PATH, json={"messages": []}, headers=headers).status_code == 400


def test_estimate() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 10}], "max_tokens": 20, "n": 2}
    assert estimate_tokens(body) == 3 + 4 + 40
    parts = [{"type": "text", "text": "abcd"}, {"type": "image_url"}]
    assert estimate_tokens({"messages": [{"content": parts}]}) == 1 + 4 + 1024
