"""Decisions: allowed, and each reason for a denial, as values and as exceptions."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

import ias
from conftest import MEMBER, MEMBER_LIMIT, MODEL, ORG, ORG_BUDGET, Team


def test_allowed(governor: ias.Governor, team: Team) -> None:
    decision = governor.authorize(team.key, MODEL, 300)
    assert decision.allowed and bool(decision)
    assert decision.status_code == 200
    assert decision.reason is None and decision.category is None and decision.message is None
    assert decision.retry_after is None
    assert (decision.model, decision.requested) == (MODEL, 300)
    # Bob's own limit (1,000) leaves less than the org budget: it is the one reported.
    assert (decision.scope, decision.kind) == ("user", "monthly_tokens")
    assert (decision.limit, decision.used) == (MEMBER_LIMIT, 0)
    # Held by open requests and by other holders' budget leases: at least this one.
    assert decision.reserved is not None and decision.reserved >= 300
    assert decision.remaining == MEMBER_LIMIT - decision.reserved
    assert decision.reset_at is not None and decision.reset_at > datetime.now(timezone.utc)
    assert decision.period is not None and len(decision.period) == 7
    principal = decision.principal
    assert principal is not None
    assert (principal.org_slug, principal.email, principal.key_id) == (ORG, MEMBER, team.key_id)
    reservation = decision.reservation
    assert reservation is not None and reservation.open
    assert (reservation.tokens, reservation.model, reservation.key_id) == (300, MODEL, team.key_id)
    decision.raise_for_denial()  # nothing to raise


def test_invalid_key(governor: ias.Governor, team: Team) -> None:
    for key in ["", "sk-not-ours", "ias_" + "x" * 40]:
        decision = governor.authorize(key, MODEL, 10)
        assert (decision.allowed, decision.reason, decision.status_code) == (
            False,
            "invalid_key",
            401,
        )
        assert decision.category == "unauthenticated"
        assert decision.principal is None and decision.reservation is None
        with pytest.raises(ias.InvalidKey) as raised:
            decision.raise_for_denial()
        assert raised.value.status_code == 401
        assert raised.value.decision is decision


def test_expired_key(governor: ias.Governor, team: Team) -> None:
    created = governor.create_key(MEMBER, timedelta(milliseconds=50))
    time.sleep(0.1)
    decision = governor.authorize(created.secret, MODEL, 10)
    assert (decision.reason, decision.status_code) == ("expired_key", 401)
    assert decision.principal is not None and decision.principal.key_id == created.key.id
    with pytest.raises(ias.InvalidKey):
        decision.raise_for_denial()


def test_revoked_key(governor: ias.Governor, team: Team) -> None:
    revoked = governor.revoke_key(team.key_id)
    assert revoked.status == "revoked"
    decision = governor.authorize(team.key, MODEL, 10)
    assert (decision.reason, decision.status_code) == ("revoked_key", 401)
    with pytest.raises(ias.InvalidKey) as raised:
        decision.raise_for_denial()
    assert raised.value.reason == "revoked_key"


def test_model_not_allowed(governor: ias.Governor, team: Team) -> None:
    decision = governor.authorize(team.key, "gpt-4o", 10)
    assert (decision.reason, decision.category, decision.status_code) == (
        "model_not_allowed",
        "forbidden",
        403,
    )
    assert decision.message == f"model `gpt-4o` is not allowed for organization `{ORG}`"
    assert decision.scope is None and decision.limit is None and decision.retry_after is None
    with pytest.raises(ias.ModelNotAllowed) as raised:
        decision.raise_for_denial()
    err = raised.value
    assert (err.status_code, err.reason, err.retry_after) == (403, "model_not_allowed", None)
    assert str(err) == err.message == decision.message


def test_org_budget(governor: ias.Governor, team: Team) -> None:
    governor.set_user_limit(MEMBER, None)
    first = governor.authorize(team.key, MODEL, ORG_BUDGET - 100)
    assert first.allowed
    decision = governor.authorize(team.key, MODEL, 200)
    assert (decision.reason, decision.status_code) == ("org_budget_exhausted", 429)
    assert (decision.scope, decision.kind, decision.limit) == ("org", "monthly_tokens", ORG_BUDGET)
    assert (decision.used, decision.reserved, decision.remaining) == (0, ORG_BUDGET - 100, 100)
    assert decision.retry_after is not None and decision.retry_after >= 1
    assert decision.reset_at is not None
    with pytest.raises(ias.BudgetExceeded) as raised:
        decision.raise_for_denial()
    assert (raised.value.status_code, raised.value.retry_after) == (429, decision.retry_after)


def test_user_limit(governor: ias.Governor, team: Team) -> None:
    decision = governor.authorize(team.key, MODEL, MEMBER_LIMIT + 1)
    assert (decision.reason, decision.scope, decision.limit) == (
        "user_limit_exhausted",
        "user",
        MEMBER_LIMIT,
    )
    # Asking for more than the whole limit can never fit: no retry time.
    assert decision.retry_after is None
    with pytest.raises(ias.BudgetExceeded) as raised:
        decision.raise_for_denial()
    assert raised.value.retry_after is None


def test_rate_limit(governor: ias.Governor, team: Team) -> None:
    assert governor.set_rate_limits(ORG, key_id=team.key_id, rpm=2)
    for _ in range(2):
        assert governor.authorize(team.key, MODEL, 10).allowed
    decision = governor.authorize(team.key, MODEL, 10)
    assert (decision.reason, decision.status_code) == ("rate_limited", 429)
    assert (decision.scope, decision.kind, decision.limit, decision.used) == (
        "key",
        "requests_per_minute",
        2,
        2,
    )
    assert decision.retry_after is not None and 1 <= decision.retry_after <= 60
    with pytest.raises(ias.BudgetExceeded) as raised:
        decision.raise_for_denial()
    assert raised.value.reason == "rate_limited"


def test_check_is_a_dry_run(governor: ias.Governor, team: Team) -> None:
    for _ in range(3):
        decision = governor.check(team.key, MODEL, 600)
        assert decision.allowed and decision.reservation is None
    assert governor.stats().open_reservations == 0
    assert governor.check(team.key, MODEL, MEMBER_LIMIT + 1).reason == "user_limit_exhausted"


def test_bad_estimate_is_an_error_not_a_denial(governor: ias.Governor, team: Team) -> None:
    with pytest.raises(ias.InvalidInputError) as raised:
        governor.authorize(team.key, MODEL, -5)
    assert raised.value.field == "estimated_tokens"
