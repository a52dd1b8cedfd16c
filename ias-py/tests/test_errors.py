"""Every exception class, raised by a real failing call, with its attributes."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

import ias
from conftest import GOOD_PASSWORD, MEMBER, ORG, Team

CORE_ERRORS = [
    ias.InvalidInputError,
    ias.WeakPasswordError,
    ias.DatabaseUrlError,
    ias.NotFoundError,
    ias.ConflictError,
    ias.PermissionDeniedError,
    ias.PasswordHashingError,
    ias.UnsupportedError,
    ias.UnavailableError,
    ias.StoreError,
]


def test_every_exception_derives_from_ias_error() -> None:
    for cls in [*CORE_ERRORS, ias.GovernorClosedError, ias.RequestDenied]:
        assert issubclass(cls, ias.IasError), cls
        assert cls.__module__ == "ias"
    assert issubclass(ias.WeakPasswordError, ias.InvalidInputError)
    assert issubclass(ias.DatabaseUrlError, ias.InvalidInputError)
    for cls in [ias.InvalidKey, ias.ModelNotAllowed, ias.BudgetExceeded]:
        assert issubclass(cls, ias.RequestDenied)


def test_invalid_input(governor: ias.Governor) -> None:
    with pytest.raises(ias.InvalidInputError) as raised:
        governor.create_org("Not A Slug", 100)
    err = raised.value
    assert type(err) is ias.InvalidInputError
    assert (err.kind, err.field, err.value) == ("invalid_input", "slug", "Not A Slug")
    assert err.reason and str(err).startswith("invalid slug `Not A Slug`")
    assert err.retryable is False


def test_weak_password(governor: ias.Governor, team: Team) -> None:
    with pytest.raises(ias.WeakPasswordError) as raised:
        governor.reset_password(MEMBER, "bob")
    err = raised.value
    assert err.kind == "weak_password"
    assert err.rules == ["too_short", "too_few_kinds", "contains_email_name"]
    assert "bob" not in str(err)  # never the password


def test_database_url(tmp_path: Path) -> None:
    with pytest.raises(ias.DatabaseUrlError) as raised:
        ias.open("mysql://localhost/ias")
    assert raised.value.kind == "database_url"
    with pytest.raises(ias.DatabaseUrlError) as raised:
        ias.open(f"sqlite:///{tmp_path}/missing/ias.db")
    assert "does not exist" in raised.value.reason


def test_database_url_hides_the_password() -> None:
    with pytest.raises(ias.IasError) as raised:
        ias.open("postgres://ias:s3cret@127.0.0.1:1/ias")
    assert "s3cret" not in str(raised.value)


def test_not_found(governor: ias.Governor) -> None:
    with pytest.raises(ias.NotFoundError) as raised:
        governor.user("nobody@example.com")
    err = raised.value
    assert (err.kind, err.entity, err.key) == ("not_found", "user", "nobody@example.com")


def test_conflict(governor: ias.Governor, team: Team) -> None:
    with pytest.raises(ias.ConflictError) as raised:
        governor.create_org(ORG, 5)
    err = raised.value
    assert (err.kind, err.entity, err.key) == ("conflict", "organization", ORG)
    assert err.reason == "already exists"


def test_permission_denied(governor: ias.Governor, team: Team) -> None:
    member = governor.acting_as(MEMBER)
    with pytest.raises(ias.PermissionDeniedError) as raised:
        member.create_org("team-beta", 100)
    err = raised.value
    assert err.kind == "permission_denied"
    assert (err.actor, err.permission) == (f"user:{MEMBER}", "org.create")
    assert err.target == "org:team-beta"


def test_password_hashing(db_url: str, tmp_path: Path) -> None:
    # A stored hash that is not a PHC string (damaged by hand, say) cannot be checked.
    with ias.open(db_url) as governor:
        governor.create_org(ORG, 100)
        governor.create_user(ORG, MEMBER)
        governor.reset_password(MEMBER, GOOD_PASSWORD)
        assert governor.verify_password(MEMBER, GOOD_PASSWORD)
    # Edited while no governor has the file open (see the README's limitations).
    with closing(sqlite3.connect(tmp_path / "ias.db")) as db, db:
        db.execute("UPDATE users SET password_hash = 'damaged' WHERE email = ?", (MEMBER,))
    with ias.open(db_url) as governor:
        with pytest.raises(ias.PasswordHashingError) as raised:
            governor.verify_password(MEMBER, GOOD_PASSWORD)
    err = raised.value
    assert (err.kind, err.retryable) == ("password_hashing", False)
    assert err.reason == "the stored password hash is not a PHC string"
    assert "damaged" not in str(err) and GOOD_PASSWORD not in str(err)


def test_unsupported(db_url: str, tmp_path: Path) -> None:
    # A database migrated by a newer ias is refused rather than written to.
    ias.open(db_url).close()
    with closing(sqlite3.connect(tmp_path / "ias.db")) as db, db:
        db.execute("INSERT INTO schema_migrations VALUES (999, 'future', 'x', 0)")
    with pytest.raises(ias.UnsupportedError) as raised:
        ias.open(db_url)
    err = raised.value
    assert (err.kind, err.retryable) == ("unsupported", False)
    assert "schema version 999 is newer than this build of ias" in str(err)


def test_unavailable(tmp_path: Path) -> None:
    (tmp_path / "ias.db").mkdir()  # a directory where the file should be
    with pytest.raises(ias.UnavailableError) as raised:
        ias.open(f"sqlite:///{tmp_path / 'ias.db'}")
    err = raised.value
    assert (err.kind, err.backend, err.retryable) == ("unavailable", "sqlite", True)


def test_store(tmp_path: Path) -> None:
    path = tmp_path / "ias.db"
    path.write_bytes(b"this is not a SQLite database, not even close" * 100)
    with pytest.raises(ias.StoreError) as raised:
        ias.open(f"sqlite:///{path}")
    err = raised.value
    assert (err.kind, err.backend, err.retryable) == ("store", "sqlite", False)


def test_closed(db_url: str) -> None:
    governor = ias.open(db_url)
    governor.close()
    with pytest.raises(ias.GovernorClosedError):
        governor.create_org(ORG, 1)


def test_reset_password_succeeds_for_the_operator(governor: ias.Governor, team: Team) -> None:
    assert governor.reset_password(MEMBER, GOOD_PASSWORD).email == MEMBER
