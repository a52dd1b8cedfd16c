"""Times authorize + settle from Python, on one thread, with the GIL released per call.

Run after installing ias into the venv (./scripts/test does):

    .venv/bin/python ias-py/bench.py [--calls N]

Prints the mean time of one authorize + settle pair, the best of several
rounds, on an in-memory SQLite store with a budget large enough that every
call is allowed. Nothing here asserts a time: it is a measurement to report.

As in the core's benchmark (ias-core/benches/hot_path.rs), usage written
behind is flushed *outside* the timed sections: a round is timed in chunks
of CHUNK pairs with a `flush()` between them, so no settle meets a full
queue (10,000 events per organization) and writes it in line. The second
figure printed times the same loop without those pauses, letting the
background maintenance and the in-line writes compete with the caller, as
a saturated single-threaded caller would see it.
"""

from __future__ import annotations

import argparse
import platform
import time

import ias


def setup() -> tuple[ias.Governor, str]:
    governor = ias.open("sqlite::memory:")
    governor.create_org("bench", 10**15)
    governor.allow_model("bench", "gpt-4o-mini")
    governor.create_user("bench", "bench@example.com")
    return governor, governor.create_key("bench@example.com").secret


CHUNK = 5_000


def pairs_ns(governor: ias.Governor, key: str, calls: int) -> int:
    """Nanoseconds taken by `calls` authorize + settle pairs."""
    authorize, settle = governor.authorize, governor.settle
    start = time.perf_counter_ns()
    for _ in range(calls):
        decision = authorize(key, "gpt-4o-mini", 100)
        reservation = decision.reservation
        assert reservation is not None
        settle(reservation, 90)
    return time.perf_counter_ns() - start


def round_ns(governor: ias.Governor, key: str, calls: int) -> float:
    """Nanoseconds per pair over `calls`, flushing between chunks, untimed."""
    total = 0
    for done in range(0, calls, CHUNK):
        governor.flush()
        total += pairs_ns(governor, key, min(CHUNK, calls - done))
    return total / calls


def sustained_ns(governor: ias.Governor, key: str, calls: int) -> float:
    """Nanoseconds per pair over `calls` in one go, writes behind included."""
    governor.flush()
    return pairs_ns(governor, key, calls) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000, help="pairs per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best is kept")
    args = parser.parse_args()

    governor, key = setup()
    round_ns(governor, key, min(args.calls, 10_000))  # warm the leases and caches
    best = min(round_ns(governor, key, args.calls) for _ in range(args.rounds))
    sustained = min(sustained_ns(governor, key, args.calls) for _ in range(args.rounds))
    governor.close()

    where = (
        f"best of {args.rounds} rounds of {args.calls:,}; ias {ias.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()}, {cpu()}"
    )
    print(f"authorize+settle from Python: {best / 1000:.2f} µs per call ({where})")
    print(f"  sustained, writes behind included: {sustained / 1000:.2f} µs per call")


def cpu() -> str:
    """The processor's model name, where Linux tells it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


if __name__ == "__main__":
    main()
