"""Every list call reads one page: `limit=` and `after=`, and a `Page` that reads like a list."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest

import ias
from conftest import MEMBER, MODEL, ORG, Team

T = TypeVar("T")


def walk(read: Callable[[int, str | None], ias.Page[T]], limit: int) -> list[T]:
    """Every item of a list, read with pages of `limit`, each after the previous page's cursor."""
    items: list[T] = []
    after: str | None = None
    for _ in range(1_000):
        page = read(limit, after)
        assert isinstance(page, ias.Page)
        assert len(page) <= limit
        items.extend(page)
        if page.next_after is None:
            return items
        after = page.next_after
    raise AssertionError("the pages never ended")


def crowd(governor: ias.Governor) -> None:
    """Five more organizations, five more users of `team-alpha`, four more keys and models."""
    for slug in ["org-e", "org-b", "org-d", "org-a", "org-c"]:
        governor.create_org(slug, 1_000)
    for name in ["zed", "amy", "kit", "bo", "lee"]:
        governor.create_user(ORG, f"{name}@example.com")
    for _ in range(4):
        governor.create_key(MEMBER)
    for model in ["openai/*", "claude-3", "mistral", "gpt-4o"]:
        governor.allow_model(ORG, model)


def test_walking_the_pages_reads_every_item_once_in_order(
    governor: ias.Governor, team: Team
) -> None:
    crowd(governor)
    for limit in [1, 2, 3]:
        orgs = walk(lambda n, a: governor.list_orgs(limit=n, after=a), limit)
        assert [o.id for o in orgs] == [o.id for o in governor.list_orgs(limit=1000)]
        assert [o.slug for o in orgs] == [ORG, "org-e", "org-b", "org-d", "org-a", "org-c"]

        users = walk(lambda n, a: governor.list_users(ORG, limit=n, after=a), limit)
        assert [u.email.split("@")[0] for u in users] == [
            "alice", "bob", "zed", "amy", "kit", "bo", "lee"
        ]

        keys = walk(lambda n, a: governor.list_keys(MEMBER, limit=n, after=a), limit)
        ids = [k.id for k in keys]
        assert len(ids) == 5 and ids == sorted(ids, reverse=True)  # newest first

        models = walk(lambda n, a: governor.list_models(ORG, limit=n, after=a), limit)
        assert models == ["claude-3", "gpt-4o", MODEL, "mistral", "openai/*"]

        entries = walk(lambda n, a: governor.audit_log(limit=n, after=a), limit)
        assert [e.id for e in entries] == list(range(len(entries), 0, -1))  # newest first


def test_usage_pages_its_users_and_its_days(governor: ias.Governor, team: Team) -> None:
    crowd(governor)
    for model in [MODEL, "gpt-4o", "claude-3"]:
        governor.authorize(team.key, model, 20).settle(10)
    governor.flush()

    days = walk(lambda n, a: governor.daily_usage(ORG, limit=n, after=a), 1)
    assert [(d.model, d.tokens) for d in days] == [("claude-3", 10), ("gpt-4o", 10), (MODEL, 10)]
    first = governor.daily_usage(ORG, limit=2)
    assert first.next_after == f"{days[1].day}/gpt-4o"

    seen: list[str] = []
    after: str | None = None
    while True:
        report = governor.usage(ORG, limit=3, after=after)
        assert report.used == 30  # every page reports the whole organization
        seen.extend(u.email for u in report.users)
        if report.next_after is None:
            break
        after = report.next_after
    assert [e.split("@")[0] for e in seen] == ["alice", "bob", "zed", "amy", "kit", "bo", "lee"]


def test_a_page_reads_like_a_list(governor: ias.Governor, team: Team) -> None:
    crowd(governor)
    page = governor.list_models(ORG, limit=3)
    assert page == ["claude-3", "gpt-4o", MODEL]
    assert page.items == ["claude-3", "gpt-4o", MODEL]
    assert page.next_after == MODEL
    assert len(page) == 3 and bool(page)
    assert page[0] == "claude-3" and page[-1] == MODEL
    assert page[1:] == ["gpt-4o", MODEL]
    assert list(page) == page.items and "gpt-4o" in page
    assert page != ["claude-3"]
    assert page == governor.list_models(ORG, limit=3)
    assert page != governor.list_models(ORG, limit=2)
    with pytest.raises(IndexError):
        page[3]
    with pytest.raises(TypeError):
        hash(page)
    assert repr(page) == f"Page(items=['claude-3', 'gpt-4o', '{MODEL}'], next_after='{MODEL}')"
    last = governor.list_models(ORG, after=MODEL)
    assert (last.items, last.next_after) == (["mistral", "openai/*"], None)
    assert not governor.list_models(ORG, after="openai/*")
    assert ias.Page[ias.User] is not None  # usable in annotations at run time


@pytest.mark.asyncio
async def test_async_lists_return_pages(governor: ias.Governor, team: Team) -> None:
    page = await governor.list_users_async(ORG, limit=1)
    assert isinstance(page, ias.Page)
    assert page.next_after is not None
    rest = await governor.list_users_async(ORG, after=page.next_after)
    assert [u.email for u in page] + [u.email for u in rest] == [
        u.email for u in governor.list_users(ORG)
    ]
    assert rest.next_after is None


@pytest.mark.parametrize("limit", [0, -1, 1001, 2**40])
def test_a_limit_outside_1_to_1000_is_invalid_input(
    governor: ias.Governor, team: Team, limit: int
) -> None:
    with pytest.raises(ias.InvalidInputError) as raised:
        governor.list_users(ORG, limit=limit)
    assert (raised.value.field, raised.value.value) == ("limit", str(limit))


def test_a_cursor_of_the_wrong_shape_is_invalid_input(governor: ias.Governor, team: Team) -> None:
    calls: list[Callable[[str], object]] = [
        lambda after: governor.list_orgs(after=after),
        lambda after: governor.list_users(ORG, after=after),
        lambda after: governor.list_keys(MEMBER, after=after),
        lambda after: governor.audit_log(after=after),
        lambda after: governor.usage(ORG, after=after),
    ]
    for call in calls:
        for bad in ["x", "0", "-1", ""]:
            with pytest.raises(ias.InvalidInputError) as raised:
                call(bad)
            assert raised.value.field == "after"
    for bad in ["2026-12-01", "soon/gpt-4o", ""]:
        with pytest.raises(ias.InvalidInputError) as raised:
            governor.daily_usage(ORG, after=bad)
        assert raised.value.field == "after"
    with pytest.raises(ias.InvalidInputError):
        governor.list_models(ORG, after="")
