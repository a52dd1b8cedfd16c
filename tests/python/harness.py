"""Starts ias-gateway for the end-to-end tests and sets it up with ias-admin.

Each test gets its own gateway: a fresh SQLite database in a temporary
directory, the built-in mock upstream, and a free port on 127.0.0.1. The
tests set up organizations, users and keys with `ias-admin`, as an operator
would, and call the gateway with the official `openai` client.

The binaries must be built first; `IAS_BIN_DIR` names their directory
(default: `<repo>/target/debug`):

    cargo build -p ias-gateway -p ias-cli
    python -m pytest tests/python
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import openai

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("IAS_BIN_DIR", REPO / "target" / "debug"))
GATEWAY_BIN = BIN_DIR / "ias-gateway"
ADMIN_BIN = BIN_DIR / "ias-admin"

LOOPBACK = "127.0.0.1"
MODEL = "gpt-4o-mini"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# Longer than the gateway's 200 ms write-behind interval.
SETTLE_PAUSE_S = 0.35
START_ATTEMPTS = 3

# Variables that would change what the gateway or ias-admin under test do.
_SCRUBBED_ENV = ("IAS_DATABASE_URL", "IAS_UPSTREAM_URL", "IAS_UPSTREAM_API_KEY")


class AdminError(Exception):
    """`ias-admin` exited with an error."""


@dataclass
class Gateway:
    """A running ias-gateway and the database it governs with."""

    port: int
    database_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"

    def client(self, key: str) -> openai.OpenAI:
        """An OpenAI client for this gateway; 429s are not retried."""
        return openai.OpenAI(
            base_url=self.base_url,
            api_key=key,
            max_retries=0,
            timeout=30.0,
            http_client=openai.DefaultHttpxClient(trust_env=False),
        )

    def admin(self, *args: str) -> Any:
        """Runs `ias-admin ARGS` on this gateway's database and returns its JSON output."""
        command = [
            str(ADMIN_BIN),
            "--database-url",
            self.database_url,
            "--output",
            "json",
            *args,
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, env=_clean_env(), timeout=60
        )
        if done.returncode != 0:
            raise AdminError(
                f"ias-admin {' '.join(args)} exited {done.returncode}: "
                f"{done.stderr.strip() or done.stdout.strip()}"
            )
        return json.loads(done.stdout)

    def create_org(self, slug: str, budget: int, models: tuple[str, ...] = (MODEL,)) -> None:
        """Creates an organization with a monthly budget and allowed models."""
        self.admin("org", "create", "--slug", slug, "--monthly-token-budget", str(budget))
        for model in models:
            self.admin("model", "allow", "--org", slug, "--model", model)

    def create_user(
        self, slug: str, email: str, limit: int | None = None, role: str = "member"
    ) -> str:
        """Creates a user with an optional own monthly limit and returns a new key's secret."""
        args = ["user", "create", "--org", slug, "--email", email, "--role", role]
        if limit is not None:
            args += ["--monthly-token-limit", str(limit)]
        self.admin(*args)
        return self.create_key(email)["secret"]

    def create_key(self, email: str) -> dict[str, Any]:
        """Creates a key; the result holds its `id` and its `secret`."""
        return self.admin("key", "create", "--email", email)

    def _settled(self, read: Callable[[], int]) -> int:
        """Reads a stored figure once the gateway's write-behind has caught up.

        The gateway writes settled usage every 200 ms; a figure that holds
        still across a longer pause is what the store has for good.
        """
        value = read()
        for _ in range(20):
            time.sleep(SETTLE_PAUSE_S)
            again = read()
            if again == value:
                return value
            value = again
        return value

    def org_used(self, slug: str) -> int:
        """Tokens the organization has used in the current period, once written."""
        return self._settled(lambda: self.admin("usage", "show", "--org", slug)["org"]["used"])

    def org_reserved(self, slug: str) -> int:
        """Tokens the store counts as held for the organization (open requests and leases)."""
        return self.admin("usage", "show", "--org", slug)["org"]["reserved"]

    def user_used(self, slug: str, email: str) -> int:
        """Tokens one user has used in the current period, once written."""

        def read() -> int:
            report = self.admin("usage", "show", "--org", slug, "--email", email)
            (user,) = [u for u in report["users"] if u["email"] == email]
            return int(user["counter"]["used"])

        return self._settled(read)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        """The text of `GET /metrics`."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{LOOPBACK}:{self.port}/metrics", timeout=5) as response:
            return response.read().decode()

    def metric(self, series: str) -> float:
        """The value of one series of `GET /metrics`, named with its labels as printed."""
        for line in self.metrics().splitlines():
            name, _, value = line.rpartition(" ")
            if name == series:
                return float(value)
        raise AssertionError(f"no series `{series}` in the metrics")

    def wait_for_metric(self, series: str, value: float, timeout_s: float = 5.0) -> float:
        """Polls a series until it has `value`; returns the last value seen."""
        deadline = time.monotonic() + timeout_s
        seen = self.metric(series)
        while seen != value and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = self.metric(series)
        return seen

    def stop(self) -> int | None:
        """Stops the gateway with SIGTERM (SIGKILL if it hangs); returns its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        return self.process.returncode


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.setdefault("RUST_LOG", "info")
    # Loopback traffic (gateway to fake upstream) never goes through a proxy.
    for name in ("NO_PROXY", "no_proxy"):
        env[name] = ",".join(filter(None, [env.get(name), LOOPBACK, "localhost"]))
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _healthy(port: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{LOOPBACK}:{port}/healthz", timeout=1) as response:
            return response.status == 200 and json.load(response) == {"status": "ok"}
    except OSError:
        return False


def start(
    directory: Path, upstream_env: dict[str, str] | None = None, args: Sequence[str] = ()
) -> Gateway:
    """Starts a gateway with a database in `directory` and waits until it is healthy.

    `upstream_env` sets `IAS_UPSTREAM_URL` and `IAS_UPSTREAM_API_KEY`; without
    it the gateway answers from its built-in mock. `args` are added to the
    command line (such as `--demo`). A start that fails (the
    free port was taken in between, say) is tried again on another port.
    """
    failures = []
    for _ in range(START_ATTEMPTS):
        try:
            return _start_once(directory, upstream_env or {}, args)
        except RuntimeError as err:
            failures.append(str(err))
    raise RuntimeError("\n\n".join(failures))


def _start_once(directory: Path, upstream_env: dict[str, str], args: Sequence[str]) -> Gateway:
    port = _free_port()
    database_url = f"sqlite://{directory / 'ias.db'}"
    log_path = directory / f"gateway-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(GATEWAY_BIN),
                *("--listen", f"{LOOPBACK}:{port}", "--database-url", database_url),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**_clean_env(), **upstream_env},
        )
    gateway = Gateway(port, database_url, process, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        if _healthy(port):
            return gateway
        time.sleep(0.05)
    gateway.stop()
    raise RuntimeError(f"ias-gateway did not become healthy on port {port}:\n{gateway.log()}")


class FakeUpstream:
    """An OpenAI-compatible upstream on 127.0.0.1 that answers every request with `answer`.

    It records the `Authorization` header and body of each request it gets.
    Use it as a context manager; `base_url` is what `IAS_UPSTREAM_URL` takes.
    """

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.requests: list[tuple[str, str | None, bytes]] = []
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                upstream.requests.append((self.path, self.headers.get("Authorization"), body))
                payload = json.dumps(upstream.answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: object) -> None:
                pass

        return Handler


class StreamingUpstream:
    """An OpenAI-compatible upstream on 127.0.0.1 that streams chat completions slowly.

    Every request is answered with an event stream: one chunk per word of
    `words`, `delay_s` seconds apart, then, when the request asked for it
    with `stream_options.include_usage`, a last chunk with the usage
    (`prompt_tokens` plus one token per word), then `[DONE]`. It records
    each request body, and `disconnected` is set when the gateway hangs up
    before the end. Use it as a context manager.
    """

    def __init__(self, words: Sequence[str], delay_s: float, prompt_tokens: int = 6) -> None:
        self.words = list(words)
        self.delay_s = delay_s
        self.prompt_tokens = prompt_tokens
        self.requests: list[dict[str, Any]] = []
        self.disconnected = threading.Event()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}/v1"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + len(self.words)

    def __enter__(self) -> StreamingUpstream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def events(self, request: dict[str, Any]) -> Iterator[dict[str, Any] | str]:
        for word in self.words:
            yield {
                "id": "chatcmpl-slow",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": request.get("model", MODEL),
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
            }
        if (request.get("stream_options") or {}).get("include_usage"):
            yield {
                "id": "chatcmpl-slow",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": request.get("model", MODEL),
                "choices": [],
                "usage": {
                    "prompt_tokens": self.prompt_tokens,
                    "completion_tokens": len(self.words),
                    "total_tokens": self.total_tokens,
                },
            }
        yield "[DONE]"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = json.loads(body)
                upstream.requests.append(request)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                try:
                    for event in upstream.events(request):
                        data = event if isinstance(event, str) else json.dumps(event)
                        self.wfile.write(f"data: {data}\n\n".encode())
                        self.wfile.flush()
                        time.sleep(upstream.delay_s)
                except (BrokenPipeError, ConnectionResetError):
                    upstream.disconnected.set()

            def log_message(self, *_: object) -> None:
                pass

        return Handler
