"""The admin calls, with the same actors and permissions as `ias-admin`."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

import ias
from conftest import ADMIN, GOOD_PASSWORD, MEMBER, MEMBER_LIMIT, MODEL, ORG, ORG_BUDGET, Team


def test_orgs(governor: ias.Governor, team: Team) -> None:
    org = governor.org(ORG)
    assert (org.slug, org.monthly_token_budget, org.timezone) == (ORG, ORG_BUDGET, "Europe/Berlin")
    assert org.managed_by == "api"
    assert org.created_at.tzinfo is not None
    other = governor.create_org("team-beta", 5)
    assert other.timezone == "UTC"
    assert [o.slug for o in governor.list_orgs()] == [ORG, "team-beta"]


def test_set_org_budget(governor: ias.Governor, team: Team) -> None:
    assert governor.authorize(team.key, MODEL, 500).allowed
    org = governor.set_org_budget(ORG, monthly_token_budget=100, timezone="Asia/Tokyo")
    assert (org.monthly_token_budget, org.timezone) == (100, "Asia/Tokyo")
    assert governor.org(ORG).monthly_token_budget == 100
    # The lower budget refuses the next request at once.
    assert not governor.check(team.key, MODEL, 500).allowed
    with pytest.raises(ias.InvalidInputError):
        governor.set_org_budget(ORG)
    with pytest.raises(ias.PermissionDeniedError):
        governor.acting_as(MEMBER).set_org_budget(ORG, monthly_token_budget=10**9)


def test_users(governor: ias.Governor, team: Team) -> None:
    bob = governor.user("  BOB@example.com ")
    assert (bob.email, bob.role, bob.monthly_token_limit) == (MEMBER, "member", MEMBER_LIMIT)
    assert [u.email for u in governor.list_users(ORG)] == [ADMIN, MEMBER]
    assert governor.set_user_limit(MEMBER, 5_000).monthly_token_limit == 5_000
    assert governor.set_user_limit(MEMBER, None).monthly_token_limit is None
    with pytest.raises(ias.InvalidInputError):
        governor.create_user(ORG, "carol@example.com", "owner")  # type: ignore[arg-type]


def test_keys(governor: ias.Governor, team: Team) -> None:
    created = governor.create_key(MEMBER, "30d")
    assert ias.is_well_formed_key(created.secret)
    assert created.secret not in repr(created)
    assert created.key.prefix == created.secret[:12]
    expires_at = created.key.expires_at
    assert expires_at is not None
    assert timedelta(days=29) < expires_at - datetime.now(timezone.utc) <= timedelta(days=30)
    keys = governor.list_keys(MEMBER)
    assert sorted(k.id for k in keys) == [team.key_id, created.key.id]
    assert all(k.status == "active" for k in keys)
    assert governor.revoke_key(created.key.id).revoked_at is not None
    with pytest.raises(ias.ConflictError):
        governor.revoke_key(created.key.id)
    with pytest.raises(ias.InvalidInputError):
        governor.create_key(MEMBER, "thirty days")


def test_models(governor: ias.Governor, team: Team) -> None:
    change = governor.allow_model(ORG, "Anthropic/*")
    assert (change.model, change.changed) == ("anthropic/*", True)
    assert not governor.allow_model(ORG, "anthropic/*").changed
    assert governor.list_models(ORG) == ["anthropic/*", MODEL]
    # The governor follows admin changes made through it at once.
    assert governor.authorize(team.key, "anthropic/claude-sonnet", 10).allowed
    assert governor.deny_model(ORG, "anthropic/*").changed
    assert governor.authorize(team.key, "anthropic/claude-sonnet", 10).reason == "model_not_allowed"


def test_rate_limits(governor: ias.Governor, team: Team) -> None:
    assert governor.set_rate_limits(ORG, rpm=100, tpm=50_000)
    assert not governor.set_rate_limits(ORG, rpm=100, tpm=50_000)
    limits = governor.rate_limits(ORG)
    assert (limits.rpm, limits.tpm) == (100, 50_000)
    governor.set_rate_limits(ORG, email=MEMBER, tpm=10)
    assert governor.rate_limits(ORG, email=MEMBER).tpm == 10
    assert governor.authorize(team.key, MODEL, 11).reason == "rate_limited"
    assert governor.rate_limits(ORG, key_id=team.key_id).rpm is None
    with pytest.raises(ias.InvalidInputError):
        governor.rate_limits(ORG, email=MEMBER, key_id=team.key_id)
    with pytest.raises(ias.InvalidInputError):
        governor.set_rate_limits(ORG, rpm=0)


def test_usage_forecast(governor: ias.Governor, team: Team) -> None:
    governor.authorize(team.key, MODEL, 300).settle(300)
    governor.flush()
    org = governor.usage_forecast(ORG)
    assert (org.limit, org.used) == (ORG_BUDGET, 300)
    # A running governor's lease counts as reserved.
    assert org.remaining == ORG_BUDGET - org.used - org.reserved
    # 300 tokens over at most 7 days and at least an hour.
    assert 300 // 7 <= org.tokens_per_day <= 300 * 24
    assert org.projected_tokens >= 300
    assert org.pace_since <= datetime.now(timezone.utc) < org.resets_at
    if org.exhausted_at is not None:
        assert org.exhausted_at < org.resets_at
    member = governor.usage_forecast(ORG, MEMBER)
    assert (member.limit, member.used) == (MEMBER_LIMIT, 300)
    assert member.remaining == MEMBER_LIMIT - member.used - member.reserved
    with pytest.raises(ias.PermissionDeniedError):
        governor.acting_as(MEMBER).usage_forecast(ORG)


def test_usage_and_daily_usage(governor: ias.Governor, team: Team) -> None:
    for used in (100, 200):
        governor.authorize(team.key, MODEL, 300).settle(used)
    governor.flush()
    report = governor.usage(ORG)
    assert (report.used, report.monthly_token_budget) == (300, ORG_BUDGET)
    assert report.remaining == ORG_BUDGET - report.used - report.reserved
    assert [(m.model, m.tokens, m.requests) for m in report.models] == [(MODEL, 300, 2)]
    days = governor.daily_usage(ORG)
    assert [(d.model, d.tokens, d.requests) for d in days] == [(MODEL, 300, 2)]
    today = date.fromisoformat(days[0].day)
    assert governor.daily_usage(ORG, MEMBER, start=today, end=today.isoformat())[0].tokens == 300
    assert governor.daily_usage(ORG, start="2000-01-01", end="2000-01-31") == []
    with pytest.raises(ias.InvalidInputError):
        governor.daily_usage(ORG, start="yesterday")


def test_audit_log_and_verification(governor: ias.Governor, team: Team) -> None:
    entries = governor.audit_log(ORG)
    actions = [e.action for e in entries]
    assert actions[:2] == ["key.create", "user.create"]  # newest first
    assert all(e.source == "library" and e.actor == governor.actor for e in entries)
    created = entries[0]
    assert created.changes["owner"] == {"before": None, "after": MEMBER}
    assert team.key not in str(created.changes)
    recent = governor.audit_log(
        since=datetime.now(timezone.utc) - timedelta(minutes=5), action="org.create"
    )
    assert [e.target for e in recent] == [f"org:{ORG}"]
    assert len(governor.audit_log(limit=1)) == 1
    outcome = governor.verify_audit()
    assert outcome.intact and outcome.broken is None and outcome.head is not None
    assert outcome.checked == outcome.head.id == max(e.id for e in entries)
    anchored = governor.verify_audit(ias.AuditHead(outcome.head.id, outcome.head.hash))
    assert anchored.intact
    broken = governor.verify_audit(ias.AuditHead(outcome.head.id, "0" * 64))
    assert broken.broken is not None and broken.broken.kind == "changed"


def test_reset_password(governor: ias.Governor, team: Team) -> None:
    bob = governor.user(MEMBER)
    assert governor.reset_password(bob.id, GOOD_PASSWORD).email == MEMBER
    entry = governor.audit_log(ORG, action="user.reset_password")[0]
    assert GOOD_PASSWORD not in str(entry.changes)
    with pytest.raises(ias.PermissionDeniedError):
        governor.acting_as(ADMIN).reset_password(MEMBER, GOOD_PASSWORD)


def test_acting_as_a_member(governor: ias.Governor, team: Team) -> None:
    bob = governor.acting_as(MEMBER)
    assert bob.actor == f"user:{MEMBER}"
    # A member manages its own keys and reads its own usage...
    created = bob.create_key(MEMBER)
    assert sorted(k.id for k in bob.list_keys(MEMBER)) == [team.key_id, created.key.id]
    assert bob.usage(ORG, MEMBER).used == 0
    # ...and nothing else; each refusal is audited as `<action>.denied`.
    with pytest.raises(ias.PermissionDeniedError) as raised:
        bob.create_key(ADMIN)
    assert raised.value.permission == "key.create"
    with pytest.raises(ias.PermissionDeniedError):
        bob.allow_model(ORG, "gpt-4o")
    denied = governor.audit_log(ORG, action="key.create.denied")
    assert [(e.actor, e.target) for e in denied] == [(f"user:{MEMBER}", f"user:{ADMIN}")]
    # Decisions are shared with the governor it was made from.
    assert bob.authorize(created.secret, MODEL, 10).allowed


def test_acting_as_an_org_admin(governor: ias.Governor, team: Team) -> None:
    alice = governor.acting_as(ADMIN)
    alice.create_user(ORG, "carol@example.com", monthly_token_limit=10)
    assert alice.set_user_limit(MEMBER, 20).monthly_token_limit == 20
    governor.create_org("team-beta", 5)
    assert [o.slug for o in alice.list_orgs()] == [ORG]  # others are left out
    with pytest.raises(ias.PermissionDeniedError):
        alice.org("team-beta")
    with pytest.raises(ias.PermissionDeniedError):
        alice.create_user(ORG, "root@example.com", "system_admin")


def test_open_acting_as(db_url: str, team: Team) -> None:
    with ias.open(db_url, acting_as=MEMBER) as bob:
        assert bob.actor == f"user:{MEMBER}"
        with pytest.raises(ias.PermissionDeniedError):
            bob.list_users(ORG)
    with pytest.raises(ias.NotFoundError):
        ias.open(db_url, acting_as="nobody@example.com")
