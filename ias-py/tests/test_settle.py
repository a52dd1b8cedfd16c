"""Settling and releasing reservations, through the governor and the decision."""

from __future__ import annotations

import pytest

import ias
from conftest import MEMBER, MODEL, ORG, Team


def test_settle_charges_the_real_usage(governor: ias.Governor, team: Team) -> None:
    decision = governor.authorize(team.key, MODEL, 300)
    assert decision.reservation is not None
    settlement = governor.settle(decision.reservation, 250)
    assert (settlement.reserved, settlement.charged) == (300, 250)
    assert not decision.reservation.open
    governor.flush()
    report = governor.usage(ORG, MEMBER)
    assert report.used == 250
    assert governor.stats().open_reservations == 0
    assert [(u.email, u.used, u.requests) for u in report.users] == [(MEMBER, 250, 1)]
    assert [(m.model, m.tokens, m.requests) for m in report.models] == [(MODEL, 250, 1)]


def test_usage_above_the_estimate_is_charged_in_full(governor: ias.Governor, team: Team) -> None:
    decision = governor.authorize(team.key, MODEL, 100)
    assert decision.settle(900).charged == 900
    assert governor.authorize(team.key, MODEL, 200).reason == "user_limit_exhausted"


def test_nothing_is_charged_twice(governor: ias.Governor, team: Team) -> None:
    decision = governor.authorize(team.key, MODEL, 100)
    assert decision.reservation is not None
    governor.settle(decision.reservation, 50)
    with pytest.raises(ias.NotFoundError) as raised:
        governor.settle(decision.reservation, 50)
    assert raised.value.entity == "reservation"
    governor.flush()
    assert governor.usage(ORG).used == 50


def test_release_charges_nothing(governor: ias.Governor, team: Team) -> None:
    decision = governor.authorize(team.key, MODEL, 400)
    assert decision.reservation is not None
    governor.release(decision.reservation)
    assert not decision.reservation.open
    governor.flush()
    assert governor.usage(ORG).used == 0
    assert governor.stats().open_reservations == 0
    with pytest.raises(ias.NotFoundError):
        decision.release()


def test_denied_and_dry_run_decisions_hold_nothing(governor: ias.Governor, team: Team) -> None:
    for decision in [
        governor.authorize(team.key, "gpt-4o", 10),
        governor.check(team.key, MODEL, 10),
    ]:
        with pytest.raises(ias.InvalidInputError) as raised:
            decision.settle(10)
        assert raised.value.field == "reservation"


def test_a_reservation_belongs_to_its_governor(db_url: str, governor: ias.Governor, team: Team) -> None:
    decision = governor.authorize(team.key, MODEL, 100)
    assert decision.reservation is not None
    with ias.open(db_url) as other:
        with pytest.raises(ias.InvalidInputError) as raised:
            other.settle(decision.reservation, 10)
    assert "another governor" in str(raised.value)
    assert decision.reservation.open


def test_with_settles_the_estimate_when_nothing_settled(governor: ias.Governor, team: Team) -> None:
    with governor.authorize(team.key, MODEL, 120) as decision:
        assert decision.allowed
    assert decision.reservation is not None and not decision.reservation.open
    governor.flush()
    assert governor.usage(ORG).used == 120


def test_with_keeps_a_settle_made_inside(governor: ias.Governor, team: Team) -> None:
    with governor.authorize(team.key, MODEL, 120) as decision:
        decision.settle(30)
    governor.flush()
    assert governor.usage(ORG).used == 30


def test_with_releases_when_the_block_raises(governor: ias.Governor, team: Team) -> None:
    with pytest.raises(RuntimeError, match="upstream down"):
        with governor.authorize(team.key, MODEL, 500) as decision:
            raise RuntimeError("upstream down")
    assert decision.reservation is not None and not decision.reservation.open
    governor.flush()
    assert governor.usage(ORG).used == 0
    assert governor.stats().open_reservations == 0


def test_with_raises_a_denial_on_entry(governor: ias.Governor, team: Team) -> None:
    entered = False
    with pytest.raises(ias.ModelNotAllowed):
        with governor.authorize(team.key, "gpt-4o", 10):
            entered = True
    assert not entered


@pytest.mark.asyncio
async def test_async_with_releases_when_the_block_raises(governor: ias.Governor, team: Team) -> None:
    with pytest.raises(ValueError):
        async with await governor.authorize_async(team.key, MODEL, 500) as decision:
            raise ValueError("bad reply")
    assert decision.reservation is not None and not decision.reservation.open
    async with await governor.authorize_async(team.key, MODEL, 70) as decision:
        await decision.settle_async(60)
    await governor.flush_async()
    assert (await governor.usage_async(ORG)).used == 60
