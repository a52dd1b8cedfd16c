"""`ias-admin` and Python on one SQLite file: each sees what the other wrote."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

import ias
from conftest import MODEL

ORG = "shared"
EMAIL = "erin@example.com"


def cli(admin_bin: Path, db_url: str, *args: str, stdin: str | None = None) -> Any:
    """Runs `ias-admin --output json ARGS` on the database and returns its JSON."""
    done = subprocess.run(
        [str(admin_bin), "--database-url", db_url, "--output", "json", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode not in (0, 3):  # 3: authorize says denied
        pytest.fail(f"ias-admin {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return json.loads(done.stdout)


def test_cli_then_python(admin_bin: Path, db_url: str) -> None:
    cli(admin_bin, db_url, "org", "create", "--slug", ORG, "--monthly-token-budget", "1000")
    cli(admin_bin, db_url, "model", "allow", "--org", ORG, "--model", MODEL)
    cli(admin_bin, db_url, "user", "create", "--org", ORG, "--email", EMAIL, "--role", "member")
    secret = cli(admin_bin, db_url, "key", "create", "--email", EMAIL)["secret"]

    with ias.open(db_url) as governor:
        decision = governor.authorize(secret, MODEL, 300)
        assert decision.allowed
        decision.settle(250)
        # A change made by the CLI while the governor runs reaches it through the change feed.
        cli(admin_bin, db_url, "model", "deny", "--org", ORG, "--model", MODEL)
        governor.refresh()
        assert governor.authorize(secret, MODEL, 10).reason == "model_not_allowed"
    # Closing wrote the usage: the CLI reads it.
    usage = cli(admin_bin, db_url, "usage", "show", "--org", ORG)
    assert usage["org"]["used"] == 250


def test_python_then_cli(admin_bin: Path, db_url: str) -> None:
    with ias.open(db_url) as governor:
        governor.create_org(ORG, 1000)
        governor.allow_model(ORG, MODEL)
        governor.create_user(ORG, EMAIL)
        created = governor.create_key(EMAIL)
        key_id = created.key.id

        allowed = cli(admin_bin, db_url, "authorize", "--key", "-", "--model", MODEL, "--tokens", "100", stdin=created.secret)
        assert allowed["decision"] == "allowed"
        keys = cli(admin_bin, db_url, "key", "list", "--email", EMAIL)
        assert [k["id"] for k in keys["items"]] == [key_id]
        assert keys["next_after"] is None
        cli(admin_bin, db_url, "key", "revoke", "--key-id", str(key_id))
        governor.refresh()
        assert governor.authorize(created.secret, MODEL, 10).reason == "revoked_key"

    # Both hosts append to one audit chain, which stays intact.
    audit = cli(admin_bin, db_url, "audit", "list", "--org", ORG)
    sources = {entry["source"] for entry in audit["items"]}
    assert sources == {"library", "cli"}
    verified = cli(admin_bin, db_url, "audit", "verify")
    assert verified["broken"] is None
