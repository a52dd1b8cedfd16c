"""GitOps from Python: real repositories made with the `git` command line, over `file://`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import ias
from conftest import ADMIN, MEMBER, MODEL

ORG = "team-alpha"

# Alice (org admin, limit 1000) and Bob (member, no limit of his own), budget 5000.
GOOD = """\
version: 1
org: team-alpha
budget:
  monthly_tokens: 5000
allowed_models: [gpt-4o-mini]
users:
  - email: alice@example.com
    role: org_admin
    monthly_token_limit: 1000
  - email: bob@example.com
    role: member
"""

LOWER_BUDGET = GOOD.replace("monthly_tokens: 5000", "monthly_tokens: 4000")

# Six errors, on lines 2, 4, 5, 9, 10 and 12.
SIX_ERRORS = """\
version: 1
org: Team
budget:
  monthly_tokens: "5000"
  currency: eur
allowed_models: [gpt-4o-mini]
users:
  - email: alice@example.com
    role: system_admin
  - email: ALICE@example.com
    role: member
    rate_limits: {tmp: 5}
"""

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
}


@dataclass
class Repo:
    """A repository made with the `git` command line, committed to on `main`."""

    path: Path

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(self.path), *args],
            env={**os.environ, **GIT_ENV},
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def commit(self, content: str) -> str:
        """Commits `content` as `ias.yaml`; returns the commit id."""
        (self.path / "ias.yaml").write_text(content)
        self.git("add", "ias.yaml")
        self.git("commit", "--quiet", "--allow-empty", "-m", "ias.yaml")
        return self.git("rev-parse", "HEAD").strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repo:
    """An empty repository, and a Git cache of the test's own."""
    monkeypatch.setenv("IAS_GITOPS_CACHE_DIR", str(tmp_path / "git-cache"))
    path = tmp_path / "repo"
    path.mkdir()
    made = Repo(path)
    made.git("init", "--quiet", "--initial-branch=main")
    return made


@pytest.fixture
def org(governor: ias.Governor) -> str:
    """`team-alpha` with a budget of 1000, managed through the API."""
    governor.create_org(ORG, 1000)
    return ORG


@pytest.fixture
def synced(governor: ias.Governor, repo: Repo, org: str) -> Iterator[str]:
    """`team-alpha` enabled on the repository holding GOOD, and synced; yields the commit."""
    commit = repo.commit(GOOD)
    governor.gitops_enable(org, repo.url)
    assert governor.gitops_sync(org).synced
    yield commit


def emails(governor: ias.Governor) -> list[str]:
    return [u.email for u in governor.list_users(ORG)]


def test_enable_sync_and_status(governor: ias.Governor, repo: Repo, org: str) -> None:
    commit = repo.commit(GOOD)
    state = governor.gitops_enable(org, repo.url)
    assert (state.org, state.status, state.reason) == (ORG, "out_of_sync", "never_synced")
    assert not state.synced and state.last_applied_commit is None and state.inventory is None
    settings = state.settings
    assert (settings.repo, settings.ref, settings.path) == (repo.url, "main", "ias.yaml")
    assert (settings.prune, settings.drift, settings.max_removal) == (False, "report", 25)
    assert (settings.allow_empty, settings.suspended, settings.credentials) == (False, False, None)

    state = governor.gitops_sync(org)
    assert (state.status, state.reason, state.synced) == ("synced", "synced", True)
    assert state.last_applied_commit == commit == state.last_fetched_commit
    assert state.consecutive_failures == 0 and state.last_success_at is not None
    assert state.added_users == [ADMIN, MEMBER]
    assert state.inventory is not None and state.inventory["commit"] == commit
    assert governor.org(org).monthly_token_budget == 5000
    assert governor.org(org).managed_by == "gitops"
    assert emails(governor) == [ADMIN, MEMBER]
    assert governor.user(ADMIN).monthly_token_limit == 1000
    assert repr(state) == (
        f'GitopsState(org="{ORG}", status="synced", reason="synced", applied="{commit[:12]}")'
    )

    # The governor sees the applied users at once: a key of Bob's works.
    key = governor.create_key(MEMBER)
    assert governor.authorize(key.secret, MODEL, 10).allowed

    one = governor.gitops_status(org)
    assert isinstance(one, ias.GitopsState) and one.synced
    every = governor.gitops_status()
    assert [s.org for s in every] == [ORG]
    assert isinstance(every, ias.Page) and every.next_after is None
    applies = governor.audit_log(org, action="gitops.apply")
    assert applies and all(e.source == "gitops" for e in applies)


def test_enable_refuses_bad_values(governor: ias.Governor, repo: Repo, org: str) -> None:
    with pytest.raises(ias.InvalidInputError) as raised:
        governor.gitops_enable(org, repo.url, max_removal=150)
    assert raised.value.field == "max_removal"
    with pytest.raises(ias.InvalidInputError) as raised:
        governor.gitops_enable(org, repo.url, max_removal=-1)
    assert raised.value.field == "max_removal"
    with pytest.raises(ias.InvalidInputError) as raised:
        governor.gitops_enable(org, repo.url, drift="fix")  # type: ignore[arg-type]
    assert (raised.value.field, raised.value.value) == ("drift", "fix")
    with pytest.raises(ias.InvalidInputError) as raised:
        governor.gitops_enable(org, "https://user:s3cret@git.example.com/x.git")
    for text in (str(raised.value), raised.value.value, raised.value.reason, repr(raised.value)):
        assert "s3cret" not in text
    with pytest.raises(ias.NotFoundError):
        governor.gitops_enable("nope", repo.url)
    # Nothing was enabled.
    with pytest.raises(ias.NotFoundError):
        governor.gitops_status(org)
    assert governor.gitops_status() == []


def test_enable_takes_every_setting(governor: ias.Governor, repo: Repo, org: str) -> None:
    state = governor.gitops_enable(
        org,
        repo.url,
        ref="release",
        path="teams/alpha.yaml",
        credentials="env:IAS_TEST_TOKEN",
        prune=True,
        drift="heal",
        max_removal=50,
        allow_empty=True,
    )
    s = state.settings
    assert (s.ref, s.path, s.credentials) == ("release", "teams/alpha.yaml", "env:IAS_TEST_TOKEN")
    assert (s.prune, s.drift, s.max_removal, s.allow_empty) == (True, "heal", 50, True)


def test_plan(governor: ias.Governor, repo: Repo, org: str, tmp_path: Path) -> None:
    commit = repo.commit(GOOD)
    governor.gitops_enable(org, repo.url)
    plan = governor.gitops_plan(org)
    assert plan.has_changes and plan.org == ORG and plan.commit == commit
    assert plan.refused is None and plan.blocked == []
    budget = [c for c in plan.changes if c.field == "budget.monthly_tokens"]
    assert len(budget) == 1
    change = budget[0]
    assert (change.op, change.target, change.before, change.after) == (
        "change",
        f"org:{ORG}",
        1000,
        5000,
    )
    assert str(change) == f"~ org:{ORG} budget.monthly_tokens: 1000 -> 5000"
    assert any(c.op == "add" and c.target == f"user:{ADMIN}" for c in plan.changes)
    # Planning writes nothing.
    assert governor.org(org).monthly_token_budget == 1000 and emails(governor) == []

    governor.gitops_sync(org)
    plan = governor.gitops_plan(org)
    assert not plan.has_changes and plan.changes == []

    local = tmp_path / "lower.yaml"
    local.write_text(LOWER_BUDGET)
    for file in (local, str(local)):
        plan = governor.gitops_plan(org, file)
        assert plan.commit is None
        assert [str(c) for c in plan.changes] == [
            f"~ org:{ORG} budget.monthly_tokens: 5000 -> 4000"
        ]
    with pytest.raises(ias.NotFoundError):
        governor.gitops_plan(org, tmp_path / "missing.yaml")


def test_invalid_file_raises_with_every_error(
    governor: ias.Governor, repo: Repo, synced: str, tmp_path: Path
) -> None:
    local = tmp_path / "bad.yaml"
    local.write_text(SIX_ERRORS)
    bad = repo.commit(SIX_ERRORS)
    for file in (local, None):
        with pytest.raises(ias.InvalidInputError) as raised:
            governor.gitops_plan(ORG, file)
        assert raised.value.field == "file"
        lines = raised.value.reason.splitlines()
        assert [line.split(": ")[0:2] for line in lines] == [
            ["2:6", "org"],
            ["4:19", "budget.monthly_tokens"],
            ["5:3", "budget.currency"],
            ["9:11", "users[0].role"],
            ["10:12", "users[1].email"],
            ["12:19", "users[1].rate_limits.tmp"],
        ]
        assert "did you mean `tpm`?" in lines[5]

    # A sync of that commit is a state, not an exception: an error, nothing applied.
    state = governor.gitops_sync(ORG)
    assert (state.status, state.reason, state.synced) == ("error", "invalid_file", False)
    assert state.last_attempted_commit == bad and state.last_applied_commit == synced
    assert state.consecutive_failures == 1 and state.next_retry_at is not None
    assert "users[1].rate_limits.tmp" in state.message
    assert governor.org(ORG).monthly_token_budget == 5000
    assert emails(governor) == [ADMIN, MEMBER]


def test_a_write_to_a_git_owned_field_is_a_conflict(
    governor: ias.Governor, repo: Repo, synced: str
) -> None:
    with pytest.raises(ias.ConflictError) as raised:
        governor.set_user_limit(MEMBER, 7)
    assert repo.url in raised.value.reason and synced[:12] in raised.value.reason
    assert "break-glass" in raised.value.reason
    assert (raised.value.repo_url, raised.value.commit) == (repo.url, synced)
    with pytest.raises(ias.ConflictError):
        governor.allow_model(ORG, "gpt-4o")
    with pytest.raises(ias.ConflictError):
        governor.set_rate_limits(ORG, rpm=10)
    assert governor.user(MEMBER).monthly_token_limit is None
    assert governor.gitops_drift(ORG) == []


def test_break_glass(governor: ias.Governor, db_url: str, synced: str) -> None:
    assert not governor.break_glass
    forced = governor.with_break_glass()
    assert forced.break_glass and forced.actor == governor.actor
    assert forced.set_user_limit(MEMBER, 7).monthly_token_limit == 7

    drift = governor.gitops_drift(ORG)
    assert [(c.op, c.target, c.field, c.before, c.after) for c in drift] == [
        ("change", f"user:{MEMBER}", "monthly_token_limit", 7, None)
    ]
    state = governor.gitops_status(ORG)
    assert (state.status, state.reason, state.drift_count) == ("out_of_sync", "break_glass", 1)
    entry = governor.audit_log(ORG, action="user.set_limit")[0]
    assert entry.actor == governor.actor

    # Only a system admin may break glass: an org admin is still refused.
    alice = forced.acting_as(ADMIN)
    assert alice.break_glass
    with pytest.raises(ias.ConflictError):
        alice.set_user_limit(MEMBER, 8)

    with ias.open(db_url, break_glass=True) as opened:
        assert opened.break_glass
        assert opened.set_user_limit(MEMBER, 9).monthly_token_limit == 9


def test_permissions(governor: ias.Governor, repo: Repo, synced: str) -> None:
    bob = governor.acting_as(MEMBER)
    with pytest.raises(ias.PermissionDeniedError) as raised:
        bob.gitops_sync(ORG)
    assert raised.value.permission == "gitops.manage"
    with pytest.raises(ias.PermissionDeniedError):
        bob.gitops_suspend(ORG)
    denied = governor.audit_log(ORG, action="gitops.sync.denied")
    assert [e.actor for e in denied] == [f"user:{MEMBER}"]

    alice = governor.acting_as(ADMIN)
    assert alice.gitops_status(ORG).synced
    repo.commit(LOWER_BUDGET)
    assert alice.gitops_plan(ORG).has_changes
    assert alice.gitops_sync(ORG).synced
    assert governor.org(ORG).monthly_token_budget == 4000


def test_suspend_resume_and_disable(governor: ias.Governor, repo: Repo, synced: str) -> None:
    assert governor.gitops_suspend(ORG)
    assert not governor.gitops_suspend(ORG)
    assert governor.gitops_status(ORG).settings.suspended
    nxt = repo.commit(LOWER_BUDGET)
    state = governor.gitops_sync(ORG)
    assert (state.status, state.reason) == ("suspended", "suspended")
    assert state.message == f"suspended: 1 change(s) from {nxt[:12]} wait to be applied"
    assert governor.org(ORG).monthly_token_budget == 5000

    assert governor.gitops_resume(ORG)
    assert not governor.gitops_resume(ORG)
    state = governor.gitops_sync(ORG)
    assert state.synced and state.last_applied_commit == nxt
    assert governor.org(ORG).monthly_token_budget == 4000

    assert governor.gitops_disable(ORG)
    assert not governor.gitops_disable(ORG)
    with pytest.raises(ias.NotFoundError):
        governor.gitops_status(ORG)
    with pytest.raises(ias.NotFoundError):
        governor.gitops_sync(ORG)
    # The fields are API-managed again.
    assert governor.set_user_limit(MEMBER, 7).monthly_token_limit == 7


def test_an_unreachable_repository_is_an_error_state(
    governor: ias.Governor, repo: Repo, synced: str
) -> None:
    governor.gitops_enable(ORG, f"file://{repo.path / 'gone'}")
    state = governor.gitops_sync(ORG)
    assert (state.status, state.reason) == ("error", "fetch_failed")
    # Nothing from the new repository is applied yet; the data stays as it was.
    assert state.last_applied_commit is None
    assert emails(governor) == [ADMIN, MEMBER]
    with pytest.raises(ias.UnavailableError) as raised:
        governor.gitops_plan(ORG)
    assert raised.value.retryable


@pytest.mark.asyncio
async def test_async_twins(governor: ias.Governor, repo: Repo, org: str) -> None:
    commit = repo.commit(GOOD)
    state = await governor.gitops_enable_async(org, repo.url, drift="heal")
    assert state.settings.drift == "heal"
    plan = await governor.gitops_plan_async(org)
    assert plan.has_changes and plan.commit == commit
    state = await governor.gitops_sync_async(org)
    assert state.synced
    assert (await governor.gitops_status_async(org)).synced
    assert [s.org for s in await governor.gitops_status_async()] == [ORG]
    assert await governor.gitops_drift_async(org) == []
    assert await governor.gitops_suspend_async(org)
    assert await governor.gitops_resume_async(org)
    assert await governor.gitops_disable_async(org)
    with pytest.raises(ias.NotFoundError):
        await governor.gitops_sync_async(org)
