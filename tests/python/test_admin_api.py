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
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from harness import LOOPBACK, Gateway

# GitOps `enable` accepts only this prefix in these tests, and nothing lives
# there: a generated repository URL is never fetched from anywhere.
FUZZ_REPOS = "file:///nonexistent-ias-fuzz/"
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


def admin_gateway(start_gateway: Callable[..., Gateway], tmp_path: Path) -> Gateway:
    """A gateway whose GitOps accepts only the never-fetched fuzz prefix."""
    return start_gateway(
        upstream_env={"IAS_GITOPS_CACHE_DIR": str(tmp_path / "git-cache")},
        args=["--gitops-allowed-repo", FUZZ_REPOS],
    )


def test_the_admin_api_conforms_to_its_openapi_document(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gateway = admin_gateway(start_gateway, tmp_path)
    gateway.create_org("acme", 1_000_000)
    filler = user_id(gateway, gateway.create_user("acme", "filler@acme.example"))
    for _ in range(FILLER_KEYS - 1):
        gateway.create_key("filler@acme.example")
    root = gateway.create_user("acme", "root@acme.example", role="system_admin")

    # Real identifiers, so that generated requests reach past the 404s.
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[parameters]\n"path.org" = "acme"\n"path.id" = {filler}\n"query.user_id" = {filler}\n'
    )
    schema = f"http://{LOOPBACK}:{gateway.port}/api/v1/openapi.json"
    for config_args in ([], ["--config-file", str(config)]):
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
                "11",
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
    status, created = call(gateway, member, "POST", f"/users/{me}/keys", {"expires_in": "1d"})
    assert status == 201 and created["secret"].startswith(created["key"]["prefix"])
    status, body = call(gateway, created["secret"], "GET", "/me")
    assert (status, body["email"]) == (200, "max@acme.example")


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
