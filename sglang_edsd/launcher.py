"""Start and stop real SGLang servers: one launcher for the tests, the demo and benchmarks.

A server runs `python -m sglang.launch_server` in its own process group on a free
loopback port, its output goes to a log file that is kept, and `stop()` ends the whole
group (SGLang spawns scheduler and detokenizer children).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the launching process dies (Linux), so a
    killed test run or demo does not leave servers behind."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_args(dtype: str = "float32", max_total_tokens: int = 16384) -> list[str]:
    """Flags for serving on this CPU (the CPU-support layer needs nothing more than --device).

    `--sleep-on-idle` stops an idle scheduler from spinning on a core: with 2 cores, one
    idle server would otherwise halve the speed of another.
    """
    return ["--device", "cpu", "--dtype", dtype, "--max-total-tokens", str(max_total_tokens), "--sleep-on-idle"]


def spec_args(
    algorithm: str, draft_path: str | Path, steps: int = 4, topk: int = 1, draft_tokens: int | None = None
) -> list[str]:
    """Flags for `algorithm` (EDSD, or SGLang's own EAGLE3 for the baseline): a depth-`steps`
    chain by default; topk > 1 drafts a tree verified over `draft_tokens` nodes."""
    if topk == 1:
        draft_tokens = steps + 1
    elif draft_tokens is None:
        raise ValueError("a tree (topk > 1) needs draft_tokens, the number of nodes to verify")
    return [
        "--speculative-algorithm",
        algorithm,
        "--speculative-draft-model-path",
        str(draft_path),
        "--speculative-num-steps",
        str(steps),
        "--speculative-eagle-topk",
        str(topk),
        "--speculative-num-draft-tokens",
        str(draft_tokens),
    ]


def edsd_args(draft_path: str | Path, steps: int = 4) -> list[str]:
    """Flags for EDSD with a depth-`steps` chain."""
    return spec_args("EDSD", draft_path, steps)


@dataclass
class Server:
    """A running SGLang server; use as a context manager or call `stop()`."""

    proc: subprocess.Popen
    port: int
    args: list[str]
    log_path: Path
    spawned_at: float = field(default_factory=time.perf_counter)
    started_s: float = 0.0  # seconds from spawn to healthy, set by wait_ready

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerStartError(RuntimeError):
    """The server exited or never became healthy; carries the end of its log."""


class PortInUseError(ServerStartError):
    """The HTTP port was taken between picking it and binding it (another server's own ports
    can land on it); the caller retries on a fresh port."""


BIND_FAILED = "error while attempting to bind on address"


def start(
    model_path: str | Path,
    extra_args: list[str],
    log_path: str | Path | None = None,
    env: dict[str, str] | None = None,
) -> Server:
    """Spawn `sglang.launch_server` without waiting for it.

    Call from the thread that will outlive the server: on Linux the server is tied to its
    parent *thread* (PR_SET_PDEATHSIG), so spawn in the main thread and wait elsewhere.
    """
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "sglang.launch_server",
        "--model-path",
        str(model_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra_args,
    ]
    if log_path is None:
        log_path = Path(tempfile.mkdtemp(prefix="sglang-edsd-")) / "server.log"
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    return Server(proc=proc, port=port, args=args, log_path=log_path)


def wait_ready(server: Server, timeout: float = 900.0) -> Server:
    """Block until `/health_generate` answers; `started_s` becomes the start-up time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if BIND_FAILED in server.log_path.read_text(errors="replace"):
            server.stop()
            raise PortInUseError(f"port {server.port} was taken; log {server.log_path}:\n{server.log_tail(5)}")
        if server.proc.poll() is not None:
            raise ServerStartError(
                f"server exited with code {server.proc.returncode}; log {server.log_path}:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"{server.base_url}/health_generate", timeout=60) as r:
                if r.status == 200:
                    server.started_s = time.perf_counter() - server.spawned_at
                    return server
        except OSError:
            pass
        time.sleep(1.0)
    server.stop()
    raise ServerStartError(f"server not healthy after {timeout:.0f}s; log {server.log_path}:\n{server.log_tail()}")


def launch_all(
    specs: dict[str, tuple[str | Path, list[str]]],
    log_dir: str | Path,
    env: dict[str, str] | None = None,
    timeout: float = 900.0,
) -> dict[str, Server]:
    """Start servers `{name: (model, args)}` at once and wait until all are healthy.

    Spawned in the calling thread (servers die with the thread that spawned them) and only
    waited for in a pool; logs go to `<log_dir>/<name>.log`. A port taken before its server
    bound it is retried on a fresh port, up to 3 tries. If any server fails, all are stopped
    and one error names each failure.
    """
    servers: dict[str, Server] = {}
    errors: list[str] = []
    pending = dict(specs)
    for attempt in range(3):
        spawned = {
            name: start(model, args, Path(log_dir) / f"{name}.log", env) for name, (model, args) in pending.items()
        }
        with ThreadPoolExecutor(len(spawned)) as pool:
            futures = {name: pool.submit(wait_ready, server, timeout) for name, server in spawned.items()}
        retry = {}
        for name, fut in futures.items():
            try:
                servers[name] = fut.result()
            except PortInUseError as e:
                if attempt == 2:
                    errors.append(f"{name}: {e}")
                retry[name] = pending[name]
            except ServerStartError as e:
                errors.append(f"{name}: {e}")
        pending = retry
        if not pending:
            break
    if errors:
        for s in servers.values():
            s.stop()
        raise ServerStartError("\n\n".join(errors))
    return servers


def launch(
    model_path: str | Path,
    extra_args: list[str],
    log_path: str | Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 900.0,
) -> Server:
    """Start `sglang.launch_server` and block until `/health_generate` answers (see `launch_all`)."""
    log_path = Path(log_path) if log_path else Path(tempfile.mkdtemp(prefix="sglang-edsd-")) / "server.log"
    return launch_all({log_path.stem: (model_path, extra_args)}, log_path.parent, env, timeout)[log_path.stem]
