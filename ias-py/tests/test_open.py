"""Opening and closing governors: URLs, versions, context managers, exit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import ias
from conftest import MODEL, ORG, REPO, Team


def test_version_is_the_crates() -> None:
    cargo = (REPO / "Cargo.toml").read_text(encoding="utf-8")
    match = re.search(r'^\[workspace\.package\]\nversion = "([^"]+)"', cargo, re.MULTILINE)
    assert match is not None
    assert ias.__version__ == match.group(1)


def test_opens_a_new_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with ias.open(f"sqlite:///{path}") as governor:
        assert governor.list_orgs() == []
        assert not governor.closed
    assert path.is_file()


def test_opens_an_in_memory_database() -> None:
    with ias.open("sqlite::memory:") as governor:
        governor.create_org(ORG, 100)
        assert [org.slug for org in governor.list_orgs()] == [ORG]


def test_the_local_operator_acts_by_default(governor: ias.Governor) -> None:
    assert governor.actor.startswith("operator:")


def test_close_is_idempotent_and_refuses_later_calls(db_url: str) -> None:
    governor = ias.open(db_url)
    governor.close()
    governor.close()
    assert governor.closed
    with pytest.raises(ias.GovernorClosedError) as raised:
        governor.authorize("ias_x", MODEL, 1)
    assert raised.value.kind == "closed"
    with pytest.raises(ias.GovernorClosedError):
        governor.list_orgs()
    assert governor.stats().keys == 0


def test_leaving_with_writes_usage(db_url: str, team: Team, governor: ias.Governor) -> None:
    with ias.open(db_url) as other:
        decision = other.authorize(team.key, MODEL, 100)
        assert decision.reservation is not None
        other.settle(decision.reservation, 42)
    assert other.closed
    assert governor.usage(ORG).used == 42


def test_interpreter_exit_writes_usage(db_url: str, team: Team, governor: ias.Governor) -> None:
    script = (
        "import ias, sys\n"
        "g = ias.open(sys.argv[1])\n"
        "d = g.authorize(sys.argv[2], sys.argv[3], 100)\n"
        "g.settle(d.reservation, 77)\n"
        # No close(): the atexit hook must write the usage held in memory.
    )
    subprocess.run([sys.executable, "-c", script, db_url, team.key, MODEL], check=True)
    assert governor.usage(ORG).used == 77


def test_open_async_and_async_with(db_url: str) -> None:
    import asyncio

    async def main() -> bool:
        async with await ias.open_async(db_url) as governor:
            await governor.create_org_async(ORG, 100)
            assert [o.slug for o in await governor.list_orgs_async()] == [ORG]
        return governor.closed

    assert asyncio.run(main())


def test_key_format_check() -> None:
    assert not ias.is_well_formed_key("sk-not-ias")


def test_strict_durability_writes_each_settle(db_url: str, team: Team, governor: ias.Governor) -> None:
    with ias.open(db_url, durability="strict") as strict:
        strict.authorize(team.key, MODEL, 100).settle(64)
        assert governor.usage(ORG).used == 64  # stored before settle returned
    with pytest.raises(ias.InvalidInputError) as raised:
        ias.open(db_url, durability="eventually")  # type: ignore[arg-type]
    assert raised.value.field == "durability"
