"""Fixtures for the tests of the Python bindings.

Run after installing the bindings into the project's virtualenv (as
`./scripts/test` does):

    .venv/bin/python -m pytest ias-py/tests

The CLI tests run `ias-admin` from `IAS_BIN_DIR` (default `target/debug`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import ias

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("IAS_BIN_DIR", REPO / "target" / "debug"))
ADMIN_BIN = BIN_DIR / "ias-admin"

ORG = "team-alpha"
MODEL = "gpt-4o-mini"
ADMIN = "alice@example.com"
MEMBER = "bob@example.com"
ORG_BUDGET = 10_000
MEMBER_LIMIT = 1_000
# A password that follows every rule (12+ characters, three kinds, no email name).
GOOD_PASSWORD = "Velvet-Harbor-2026"


@dataclass
class Team:
    """What the `team` fixture created: an org, an org admin, a member and the member's key."""

    org: str
    admin: str
    member: str
    key: str
    key_id: int


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A fresh SQLite database file, created by the first `ias.open`."""
    return f"sqlite://{tmp_path / 'ias.db'}"


@pytest.fixture
def governor(db_url: str) -> Iterator[ias.Governor]:
    """A governor on the fresh database, acting as the local operator; closed after the test."""
    with ias.open(db_url) as governor:
        yield governor


@pytest.fixture
def team(governor: ias.Governor) -> Team:
    """`team-alpha` (budget 10,000, `gpt-4o-mini` allowed), Alice (org admin) and Bob (limit 1,000)."""
    governor.create_org(ORG, ORG_BUDGET, "Europe/Berlin")
    governor.allow_model(ORG, MODEL)
    governor.create_user(ORG, ADMIN, "org_admin")
    governor.create_user(ORG, MEMBER, "member", MEMBER_LIMIT)
    created = governor.create_key(MEMBER)
    return Team(ORG, ADMIN, MEMBER, created.secret, created.key.id)


@pytest.fixture(scope="session")
def admin_bin() -> Path:
    """The `ias-admin` binary; fails clearly when it is not built."""
    if not ADMIN_BIN.is_file():
        pytest.fail(
            f"missing {ADMIN_BIN}: run `cargo build -p ias-cli` or set IAS_BIN_DIR",
            pytrace=False,
        )
    return ADMIN_BIN
