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
from dataclasses import dataclass, field
from pathlib import Path


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


def edsd_args(draft_path: str | Path, steps: int = 4) -> list[str]:
    """Flags for EDSD with a depth-`steps` chain."""
    return [
        "--speculative-algorithm", "EDSD",
        "--speculative-draft-model-path", str(draft_path),
        "--speculative-num-steps", str(steps),
        "--speculative-eagle-topk", "1",
        "--speculative-num-draft-tokens", str(steps + 1),
    ]


@dataclass
class Server:
    """A running SGLang server; use as a context manager or call `stop()`."""

    proc: subprocess.Popen
    port: int
    args: list[str]
    log_path: Path
    started_s: float = field(default=0.0)

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


def launch(
    model_path: str | Path,
    extra_args: list[str],
    log_path: str | Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 900.0,
) -> Server:
    """Start `sglang.launch_server` and block until `/health_generate` answers."""
    port = free_port()
    args = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(model_path),
            "--host", "127.0.0.1", "--port", str(port), *extra_args]
    if log_path is None:
        log_path = Path(tempfile.mkdtemp(prefix="sglang-edsd-")) / "server.log"
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
    server = Server(proc=proc, port=port, args=args, log_path=log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"server exited with code {proc.returncode}; log {log_path}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/health_generate", timeout=60) as r:
                if r.status == 200:
                    server.started_s = time.perf_counter() - t0
                    return server
        except OSError:
            pass
        time.sleep(1.0)
    server.stop()
    raise ServerStartError(f"server not healthy after {timeout:.0f}s; log {log_path}:\n{server.log_tail()}")
