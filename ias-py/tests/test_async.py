"""The `_async` twins: awaitables for asyncio servers."""

from __future__ import annotations

import asyncio

import pytest

import ias
from conftest import ADMIN, GOOD_PASSWORD, MEMBER, MEMBER_LIMIT, MODEL, ORG, Team

pytestmark = pytest.mark.asyncio


async def test_authorize_and_settle(governor: ias.Governor, team: Team) -> None:
    decision = await governor.authorize_async(team.key, MODEL, 100)
    assert decision.allowed and decision.reservation is not None
    settlement = await governor.settle_async(decision.reservation, 80)
    assert settlement.charged == 80
    dry = await governor.check_async(team.key, MODEL, 100)
    assert dry.allowed and dry.reservation is None
    other = await governor.authorize_async(team.key, MODEL, 100)
    assert other.reservation is not None
    await governor.release_async(other.reservation)
    await governor.flush_async()
    assert await governor.refresh_async() >= 0
    assert (await governor.usage_async(ORG)).used == 80


async def test_concurrent_requests_never_overspend(governor: ias.Governor, team: Team) -> None:
    async def one() -> int:
        decision = await governor.authorize_async(team.key, MODEL, 30)
        if not decision.allowed:
            return 0
        return (await decision.settle_async(30)).charged

    charged = await asyncio.gather(*(one() for _ in range(100)))
    assert sum(charged) == MEMBER_LIMIT - MEMBER_LIMIT % 30


async def test_errors_are_raised_by_the_awaitable(governor: ias.Governor, team: Team) -> None:
    with pytest.raises(ias.ConflictError):
        await governor.create_org_async(ORG, 1)
    with pytest.raises(ias.NotFoundError) as raised:
        await governor.user_async("nobody@example.com")
    assert raised.value.entity == "user"
    with pytest.raises(ias.DatabaseUrlError):
        await ias.open_async("mysql://nope")


async def test_admin_twins(governor: ias.Governor, team: Team) -> None:
    org = await governor.create_org_async("team-beta", 50, "UTC")
    assert (await governor.org_async("team-beta")).id == org.id
    assert len(await governor.list_orgs_async()) == 2
    await governor.create_user_async("team-beta", "dan@example.com", "member", 10)
    assert (await governor.user_async("dan@example.com")).monthly_token_limit == 10
    assert [u.email for u in await governor.list_users_async("team-beta")] == ["dan@example.com"]
    assert (await governor.set_user_limit_async("dan@example.com", None)).monthly_token_limit is None
    await governor.reset_password_async("dan@example.com", GOOD_PASSWORD)
    created = await governor.create_key_async("dan@example.com")
    assert [k.id for k in await governor.list_keys_async("dan@example.com")] == [created.key.id]
    assert (await governor.revoke_key_async(created.key.id)).status == "revoked"
    assert (await governor.allow_model_async("team-beta", "*")).changed
    assert await governor.list_models_async("team-beta") == ["*"]
    assert (await governor.deny_model_async("team-beta", "*")).changed
    assert await governor.set_rate_limits_async("team-beta", rpm=5)
    assert (await governor.rate_limits_async("team-beta")).rpm == 5
    assert await governor.daily_usage_async("team-beta") == []
    assert (await governor.audit_log_async("team-beta", limit=1))[0].action == "limits.set"
    assert (await governor.verify_audit_async()).intact
    alice = await governor.acting_as_async(ADMIN)
    with pytest.raises(ias.PermissionDeniedError):
        await alice.create_org_async("team-gamma", 1)
    assert (await governor.usage_async(ORG, MEMBER)).used == 0
