"""The serving-side EDFuse runner: eager on CPU, two fused CUDA streams on a GPU."""

from __future__ import annotations

import pytest
import torch

from sglang_edsd.edfuse import EDFuse
from sglang_edsd.serving.edfuse_streams import EDFuseRunner

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cpu_runner_is_the_module() -> None:
    fuse = EDFuse(16, 8, 12)
    runner = EDFuseRunner(fuse, torch.device("cpu"))
    assert runner.side_stream is None and not runner.use_triton
    f, e = torch.randn(5, 16), torch.randn(5, 8)
    torch.testing.assert_close(runner(f, e), fuse(f, e))


@cuda
@pytest.mark.parametrize("side_stream", ["1", "0"])
def test_cuda_streams_match_eager(monkeypatch, side_stream: str) -> None:
    monkeypatch.setenv("SGLANG_EDSD_SIDE_STREAM", side_stream)
    fuse = EDFuse(2 * 4096, 4096, 14336).cuda().half()
    runner = EDFuseRunner(fuse, torch.device("cuda"))
    f = torch.randn(64, 2 * 4096, device="cuda", dtype=torch.half)
    e = torch.randn(64, 4096, device="cuda", dtype=torch.half)
    torch.testing.assert_close(runner(f, e), fuse(f, e), atol=2e-2, rtol=2e-2)


@cuda
def test_cuda_graph_capture_and_replay() -> None:
    fuse = EDFuse(2 * 2048, 2048, 8192).cuda().half()
    runner = EDFuseRunner(fuse, torch.device("cuda"))
    f = torch.randn(16, 2 * 2048, device="cuda", dtype=torch.half)
    e = torch.randn(16, 2048, device="cuda", dtype=torch.half)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        runner(f, e)  # warm-up (Triton compile) outside capture
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = runner(f, e)
    f.copy_(torch.randn_like(f))
    e.copy_(torch.randn_like(e))
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, fuse(f, e), atol=2e-2, rtol=2e-2)
