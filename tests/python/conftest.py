"""Fixtures for the end-to-end tests of ias-gateway (see harness.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

from harness import ADMIN_BIN, GATEWAY_BIN, Gateway, start


@pytest.fixture(scope="session")
def binaries() -> None:
    """Fails every test early, and clearly, when the binaries are not built."""
    missing = [str(path) for path in (GATEWAY_BIN, ADMIN_BIN) if not path.is_file()]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: run `cargo build -p ias-gateway -p ias-cli` "
            "or set IAS_BIN_DIR",
            pytrace=False,
        )


@pytest.fixture
def start_gateway(binaries: None, tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Starts gateways on one fresh database (arguments as in `harness.start`)."""
    started: list[Gateway] = []

    def start_one(
        upstream_env: dict[str, str] | None = None, args: Sequence[str] = ()
    ) -> Gateway:
        try:
            started.append(start(tmp_path, upstream_env, args))
        except RuntimeError as err:
            pytest.fail(str(err), pytrace=False)
        return started[-1]

    try:
        yield start_one
    finally:
        for running in started:
            running.stop()


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway]) -> Gateway:
    """A gateway with the mock upstream on a fresh database; stopped after the test."""
    return start_gateway()
