"""The published JSON Schema of the GitOps file agrees with the parser.

The commented example must validate; each file in tests/gitops/rejected must
not, at the field the parser names too (ias-core's unit tests run the same
files through the parser). The files are read with PyYAML, as an editor or a
CI check would read them; needs only `jsonschema` and `pyyaml`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "docs" / "gitops" / "ias.schema.json"
EXAMPLE_PATH = REPO / "docs" / "gitops" / "ias.example.yaml"
REJECTED = REPO / "tests" / "gitops" / "rejected"

# File name -> the path of the field the schema must reject, as the parser names it.
REJECTED_AT = {
    "unknown_key.yaml": ("budget",),
    "wrong_type.yaml": ("budget", "monthly_tokens"),
    "negative_number.yaml": ("users", 0, "monthly_token_limit"),
    "negative_rate.yaml": ("rate_limits", "rpm"),
    "system_admin.yaml": ("users", 0, "role"),
}


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as file:
        return yaml.safe_load(file)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_schema_forbids_unknown_keys_everywhere(
    validator: jsonschema.Draft202012Validator,
) -> None:
    def objects(node: Any) -> list[dict[str, Any]]:
        if not isinstance(node, dict):
            return []
        found = [node] if node.get("properties") is not None else []
        for value in node.values():
            if isinstance(value, dict):
                found.extend(objects(value))
        return found

    schemas = objects(validator.schema)
    assert len(schemas) == 4  # the file, budget, rate limits, a user
    for schema in schemas:
        assert schema["additionalProperties"] is False, schema


def test_the_example_is_valid(validator: jsonschema.Draft202012Validator) -> None:
    example = load_yaml(EXAMPLE_PATH)
    errors = [error.message for error in validator.iter_errors(example)]
    assert errors == []
    assert example["org"] == "team-alpha"
    assert [user["role"] for user in example["users"]] == ["org_admin", "member"]


def test_every_rejected_file_is_listed() -> None:
    assert sorted(path.name for path in REJECTED.glob("*.yaml")) == sorted(REJECTED_AT)


@pytest.mark.parametrize("name", sorted(REJECTED_AT))
def test_the_schema_rejects(validator: jsonschema.Draft202012Validator, name: str) -> None:
    errors = list(validator.iter_errors(load_yaml(REJECTED / name)))
    assert [tuple(error.absolute_path) for error in errors] == [REJECTED_AT[name]]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", 2),
        ("org", "Team_Alpha"),
        ("org", "-team"),
        ("allowed_models", ["gpt*"]),
        ("allowed_models", ["/*"]),
        ("allowed_models", None),
        ("users", [{"email": "bob", "role": "member"}]),
        ("users", [{"email": "bob@example.com"}]),
        ("budget", {"monthly_tokens": 1_000_000_000_000_001}),
        ("rate_limits", {"rpm": 0}),
    ],
)
def test_the_schema_rejects_what_the_parser_rejects(
    validator: jsonschema.Draft202012Validator, field: str, value: Any
) -> None:
    document = load_yaml(EXAMPLE_PATH)
    document[field] = value
    assert not validator.is_valid(document)


def test_what_may_be_null_or_empty(validator: jsonschema.Draft202012Validator) -> None:
    document = load_yaml(EXAMPLE_PATH)
    document["rate_limits"] = None
    document["budget"]["timezone"] = None
    document["allowed_models"] = ["*", " OpenAI/* "]
    document["users"][1]["rate_limits"] = {"rpm": None}
    assert validator.is_valid(document)
    document["allowed_models"] = []
    document["users"] = []
    assert validator.is_valid(document)
