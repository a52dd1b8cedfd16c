"""The admin REST API of a running ias-gateway, over real HTTP.

Schemathesis generates requests from the API's own OpenAPI document
(`/api/v1/openapi.json`) and checks every answer: no 5xx, no status, content
type, header or body outside the document. The RBAC matrix's key cases and a
password reset are then checked call by call.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from harness import LOOPBACK, Gateway

# A GitOps file for organization `acme`, as a repository would hold it.
ACME_FILE = """version: 1
org: acme
budget:
  monthly_tokens: {budget}
allowed_models: [gpt-4o-mini]
users:
  - email: ada@acme.example
    role: org_admin
  - email: max@acme.example
    role: member
    monthly_token_limit: 50000
"""
# Keys made before the fuzzer's own, so that the small key ids it tries to
# revoke (0, 1, ...) are not the one it authenticates with.
FILLER_KEYS = 20
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def call(
    gateway: Gateway, key: str | None, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    """Calls the admin API; returns the status and the JSON body."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{gateway.port}/api/v1{path}", data=data, method=method
    )
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.load(err)


def user_id(gateway: Gateway, key: str) -> int:
    """The id of the user whose key this is, as `GET /api/v1/me` tells it."""
    status, me = call(gateway, key, "GET", "/me")
    assert status == 200, me
    return int(me["id"])


def git(repo: Path, *args: str) -> str:
    """Runs git in `repo` with a fixed identity; returns its output."""
    identity = ["-c", "user.name=ias tests", "-c", "user.email=tests@ias.example"]
    done = subprocess.run(
        ["git", *identity, *args], cwd=repo, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def commit_file(repo: Path, text: str) -> str:
    """Commits `text` as `ias.yaml` on branch `main` of a local repository; returns the commit."""
    if not (repo / ".git").exists():
        repo.mkdir(parents=True)
        git(repo, "init", "--quiet", "--initial-branch", "main")
    (repo / "ias.yaml").write_text(text)
    git(repo, "add", "ias.yaml")
    git(repo, "commit", "--quiet", "--message", "ias.yaml")
    return git(repo, "rev-parse", "HEAD")


def admin_gateway(
    start_gateway: Callable[..., Gateway], tmp_path: Path, interval: int = 30
) -> Gateway:
    """A gateway whose GitOps accepts only repositories under `tmp_path/repos/`."""
    return start_gateway(
        upstream_env={"IAS_GITOPS_CACHE_DIR": str(tmp_path / "git-cache")},
        args=[
            "--gitops-allowed-repo",
            f"file://{tmp_path / 'repos'}/",
            "--gitops-interval",
            str(interval),
        ],
    )


def wait_for_sync(gateway: Gateway, key: str, commit: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """Polls an organization's GitOps state until `commit` is applied; returns the state."""
    deadline = time.monotonic() + timeout_s
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, state = call(gateway, key, "GET", "/orgs/acme/gitops")
        assert status == 200, state
        if state["status"]["last_applied_commit"] == commit:
            return state
        time.sleep(0.2)
    raise AssertionError(f"{commit} was not applied in {timeout_s} s: {state}")


def test_the_admin_api_conforms_to_its_openapi_document(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gateway = admin_gateway(start_gateway, tmp_path)
    gateway.create_org("acme", 1_000_000)
    filler = user_id(gateway, gateway.create_user("acme", "filler@acme.example"))
    for _ in range(FILLER_KEYS - 1):
        gateway.create_key("filler@acme.example")
    root = gateway.create_user("acme", "root@acme.example", role="system_admin")
    # GitOps on, from a real repository, so that its operations answer past 404.
    repo = tmp_path / "repos" / "acme"
    commit = commit_file(repo, ACME_FILE.format(budget=2_000_000))
    status, body = call(gateway, root, "PUT", "/orgs/acme/gitops", {"repo_url": f"file://{repo}"})
    assert status == 200, body
    status, body = call(gateway, root, "POST", "/orgs/acme/gitops/sync")
    assert status == 200 and body["status"]["last_applied_commit"] == commit, body

    # Real identifiers, so that generated requests reach past the 404s.
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[parameters]\n"path.org" = "acme"\n"path.id" = {filler}\n"query.user_id" = {filler}\n'
    )
    schema = f"http://{LOOPBACK}:{gateway.port}/api/v1/openapi.json"
    runs = [([], "11"), (["--config-file", str(config)], "11"), (["--config-file", str(config)], "4242")]
    for config_args, seed in runs:
        done = subprocess.run(
            [
                str(SCHEMATHESIS),
                *config_args,
                "run",
                schema,
                "--header",
                f"Authorization: Bearer {root}",
                # Every check but "valid by the schema means 2xx": a valid slug
                # may name no organization (404), a user may be of another one.
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "40",
                "--seed",
                seed,
                "--no-color",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        assert " passed" in done.stdout and "failures" not in done.stdout.lower(), done.stdout[-3000:]

    assert "panicked" not in gateway.log()
    status, me = call(gateway, root, "GET", "/me")
    assert (status, me["email"]) == (200, "root@acme.example")


def test_the_rbac_matrix_key_cases_hold_over_http(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gateway = admin_gateway(start_gateway, tmp_path)
    for slug in ("acme", "globex"):
        gateway.create_org(slug, 1_000_000)
    member = gateway.create_user("acme", "max@acme.example")
    outsider = gateway.create_user("globex", "gia@globex.example", role="org_admin")
    root = gateway.create_user("globex", "root@globex.example", role="system_admin")

    status, body = call(gateway, None, "GET", "/orgs/acme/users")
    assert (status, body["error"]["code"]) == (401, "missing_api_key")
    for key in (member, outsider):
        status, body = call(gateway, key, "GET", "/orgs/acme/users")
        assert (status, body["error"]["code"]) == (403, "permission_denied")
        status, body = call(
            gateway, key, "POST", "/orgs", {"slug": "mine", "monthly_token_budget": 5}
        )
        assert (status, body["error"]["code"]) == (403, "permission_denied")
    status, body = call(gateway, outsider, "GET", "/orgs/globex/users")
    assert status == 200 and len(body["items"]) == 2
    status, body = call(gateway, root, "GET", "/orgs/acme/users")
    assert status == 200 and [u["email"] for u in body["items"]] == ["max@acme.example"]

    # The member's own key works through the API it was refused the org list by.
    me = user_id(gateway, member)
    status, created = call(
        gateway, member, "POST", f"/users/{me}/keys", {"expires_in": "1d"}
    )
    assert status == 201 and created["secret"].startswith(created["key"]["prefix"])
    status, body = call(gateway, created["secret"], "GET", "/me")
    assert (status, body["email"]) == (200, "max@acme.example")

    # A pattern with `/` goes in and out through the gateway (its Layer included).
    status, body = call(gateway, root, "POST", "/orgs/acme/models", {"model": "anthropic/*"})
    assert (status, body) == (200, {"model": "anthropic/*", "changed": True})
    status, body = call(gateway, root, "DELETE", "/orgs/acme/models?model=anthropic%2F%2A")
    assert (status, body) == (200, {"model": "anthropic/*", "changed": True})


def test_a_system_admin_resets_a_password_over_http(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gateway = admin_gateway(start_gateway, tmp_path)
    gateway.create_org("acme", 1_000_000)
    user = user_id(gateway, gateway.create_user("acme", "max@acme.example"))
    org_admin = gateway.create_user("acme", "ada@acme.example", role="org_admin")
    root = gateway.create_user("acme", "root@acme.example", role="system_admin")
    path = f"/users/{user}/reset-password"
    password = "Tangerine-Kite-93-Harbor"

    status, body = call(gateway, org_admin, "POST", path, {"new_password": password})
    assert (status, body["error"]["code"]) == (403, "permission_denied")
    status, body = call(gateway, root, "POST", path, {"new_password": "short"})
    assert (status, body["error"]["code"]) == (400, "weak_password")
    assert "too_short" in body["error"]["details"]["broken"]

    status, body = call(gateway, root, "POST", path, {"new_password": password})
    assert (status, body["email"]) == (200, "max@acme.example")
    assert password not in json.dumps(body)

    import ias  # the bindings, built by scripts/test before these tests run

    governor = ias.open(gateway.database_url)
    assert governor.verify_password("max@acme.example", password)
    assert not governor.verify_password("max@acme.example", "short")
    entries = gateway.admin("audit", "list", "--action", "user.reset_password")["items"]
    assert [e["actor"] for e in entries] == ["user:root@acme.example"]
    assert password not in json.dumps(entries)


def test_the_servers_reconciler_applies_a_file_enabled_through_the_api(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gateway = admin_gateway(start_gateway, tmp_path, interval=1)
    gateway.create_org("acme", 1_000)
    gateway.create_org("ops", 1_000)
    root = gateway.create_user("ops", "root@ops.example", role="system_admin")
    repo = tmp_path / "repos" / "acme"
    first = commit_file(repo, ACME_FILE.format(budget=2_000_000))

    status, body = call(gateway, root, "PUT", "/orgs/acme/gitops", {"repo_url": f"file://{repo}"})
    assert status == 200, body
    # No sync call: the gateway's own reconciler applies the file within its interval.
    state = wait_for_sync(gateway, root, first)
    assert state["status"]["status"] == "synced"
    status, org = call(gateway, root, "GET", "/orgs/acme")
    assert org["monthly_token_budget"] == 2_000_000
    status, users = call(gateway, root, "GET", "/orgs/acme/users")
    limits = {u["email"]: u["monthly_token_limit"] for u in users["items"]}
    assert limits == {"ada@acme.example": None, "max@acme.example": 50_000}

    # Git owns those fields now: the API says which repository and commit.
    max_id = next(u["id"] for u in users["items"] if u["email"] == "max@acme.example")
    status, body = call(gateway, root, "PATCH", f"/users/{max_id}", {"monthly_token_limit": 1})
    assert status == 409 and body["error"]["code"] == "gitops_managed", body
    assert body["error"]["details"] == {
        "entity": "user",
        "repo_url": f"file://{repo}",
        "commit": first,
    }

    # A new commit is picked up by the next cycle; a broken one changes nothing.
    second = commit_file(repo, ACME_FILE.format(budget=3_000_000))
    wait_for_sync(gateway, root, second)
    status, org = call(gateway, root, "GET", "/orgs/acme")
    assert org["monthly_token_budget"] == 3_000_000
    broken = commit_file(repo, "version: 1\norg: acme\nbudget: lots\n")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, state = call(gateway, root, "GET", "/orgs/acme/gitops")
        if state["status"]["last_attempted_commit"] == broken:
            break
        time.sleep(0.2)
    assert state["status"]["status"] == "error", state
    assert state["status"]["last_applied_commit"] == second
    status, org = call(gateway, root, "GET", "/orgs/acme")
    assert org["monthly_token_budget"] == 3_000_000
    status, users = call(gateway, root, "GET", "/orgs/acme/users")
    assert len(users["items"]) == 2
