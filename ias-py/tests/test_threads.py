"""Many threads on one governor, and the GIL released during store calls."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import ias
from conftest import MODEL

THREADS = 8
BUDGET = 20_000
ESTIMATE = 100


def make_team(governor: ias.Governor) -> str:
    """An org whose budget is the only limit, with one member and its key."""
    governor.create_org("threads", BUDGET)
    governor.allow_model("threads", MODEL)
    governor.create_user("threads", "t@example.com")
    return governor.create_key("t@example.com").secret


def spend(governor: ias.Governor, key: str) -> int:
    """Authorizes and settles until denied; returns the tokens charged."""
    charged = 0
    while True:
        decision = governor.authorize(key, MODEL, ESTIMATE)
        if not decision.allowed:
            assert decision.reason == "org_budget_exhausted"
            return charged
        charged += decision.settle(ESTIMATE).charged


def test_threads_never_overspend(governor: ias.Governor) -> None:
    key = make_team(governor)
    with ThreadPoolExecutor(THREADS) as pool:
        charged = list(pool.map(lambda _: spend(governor, key), range(THREADS)))
    # Each request fits until less than one estimate is left: the budget is spent exactly.
    assert sum(charged) == BUDGET
    assert sum(1 for c in charged if c > 0) > 1  # the threads really shared the work
    governor.flush()
    assert governor.usage("threads").used == BUDGET


def test_two_governors_on_one_file_never_overspend(db_url: str, governor: ias.Governor) -> None:
    key = make_team(governor)
    with ias.open(db_url) as other:
        governors = [governor, other] * (THREADS // 2)
        with ThreadPoolExecutor(THREADS) as pool:
            charged = list(pool.map(lambda g: spend(g, key), governors))
    assert sum(charged) <= BUDGET
    governor.flush()
    assert governor.usage("threads").used == sum(charged)


LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")  # SQLite's write lock
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


def test_the_gil_is_released_during_a_long_call(db_url: str, governor: ias.Governor) -> None:
    """A call waiting for the database lets another Python thread run, which frees the lock.

    Another process holds SQLite's write lock until a thread of this one,
    after a pause, tells it to commit: Python code, which needs the GIL. If
    the call held the GIL while it waited for the lock, that thread could
    never run and the call would fail after the store's 5 s busy timeout.
    """
    path = db_url.removeprefix("sqlite://")
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    stdin = holder.stdin
    try:
        assert holder.stdout.readline().strip() == "locked"

        def release_later() -> None:
            time.sleep(0.3)
            stdin.write("commit\n")
            stdin.flush()

        other = threading.Thread(target=release_later)
        other.start()
        start = time.monotonic()
        governor.create_org("blocked", 5)  # waits for the lock
        waited = time.monotonic() - start
        other.join()
    finally:
        stdin.close()
        holder.wait(timeout=10)
    assert 0.25 < waited < 4.0, f"waited {waited:.2f} s"
    assert governor.org("blocked").monthly_token_budget == 5
