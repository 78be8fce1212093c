"""The launcher gives up on a server whose HTTP port was taken, so callers retry elsewhere."""

from __future__ import annotations

import subprocess
import time

import pytest

from sglang_edsd.launcher import BIND_FAILED, PortInUseError, Server, wait_ready


def test_a_taken_port_fails_fast_and_stops_the_server(tmp_path) -> None:
    log = tmp_path / "server.log"
    log.write_text(f"INFO: starting\nERROR:    [Errno 98] {BIND_FAILED} ('127.0.0.1', 1): address already in use\n")
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    server = Server(proc=proc, port=1, args=["sleep"], log_path=log)
    t0 = time.monotonic()
    with pytest.raises(PortInUseError, match="port 1 was taken"):
        wait_ready(server, timeout=60)
    assert time.monotonic() - t0 < 10
    assert proc.poll() is not None  # stopped, not left running


@pytest.mark.parametrize("forced", ["0", "1"])
def test_cpu_servers_are_skipped_where_cpu_support_is_off(monkeypatch, tmp_path, forced: str) -> None:
    """On a CUDA machine (CPU support off) `--device cpu` test servers skip instead of failing."""
    from tests import servers

    monkeypatch.setenv("SGLANG_EDSD_CPU_SUPPORT", forced)
    launched = []
    monkeypatch.setattr(servers, "launch_all", lambda specs, log_dir: launched.append(specs) or {})
    specs = {"plain": (tmp_path, ["--device", "cpu", "--dtype", "float32"])}
    if forced == "0":
        with pytest.raises(pytest.skip.Exception, match="CPU-support layer"):
            servers.start_all(specs)
        assert not launched
    else:
        servers.start_all(specs)
        assert launched == [specs]
    servers.start_all({"gpu": (tmp_path, ["--dtype", "bfloat16"])})  # GPU servers are never skipped
    assert launched[-1] == {"gpu": (tmp_path, ["--dtype", "bfloat16"])}
