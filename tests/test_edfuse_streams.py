"""The serving-side EDFuse runner: eager on CPU, two fused CUDA streams on a GPU.

The CUDA tests run the runner under `torch.no_grad()`, as SGLang runs the model, so the
Triton kernels are what they check; none of them needs SGLang (benchmarks/gpu_check.sh
runs them on a GPU machine without it). The stream protocol itself (fork, join,
record_stream) is checked on CPU with stand-in streams.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from sglang_edsd.edfuse import EDFuse
from sglang_edsd.serving.edfuse_streams import EDFuseRunner, chunk_bounds

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cpu_runner_is_the_module() -> None:
    fuse = EDFuse(16, 8, 12)
    runner = EDFuseRunner(fuse, torch.device("cpu"))
    assert runner.side_stream is None and not runner.use_triton
    f, e = torch.randn(5, 16), torch.randn(5, 8)
    torch.testing.assert_close(runner(f, e), fuse(f, e))


class _Stream:
    """Stand-in for a CUDA stream that logs the protocol calls."""

    def __init__(self, name: str, log: list) -> None:
        self.name, self.log = name, log

    def wait_stream(self, other: _Stream) -> None:
        self.log.append(f"{self.name} waits {other.name}")


@pytest.fixture
def fake_cuda(monkeypatch):
    """Run the CUDA code path on CPU tensors with eager halves and logged stream calls."""
    monkeypatch.setenv("SGLANG_EDSD_TRITON", "0")
    log: list = []
    main, side = _Stream("main", log), _Stream("side", log)

    @contextlib.contextmanager
    def on(stream: _Stream):
        log.append(f"enter {stream.name}")
        yield
        log.append(f"leave {stream.name}")

    monkeypatch.setattr(torch.cuda, "current_stream", lambda: main)
    monkeypatch.setattr(torch.cuda, "stream", on)
    recorded: list = []

    def record_stream(t: torch.Tensor, stream: _Stream) -> None:
        log.append(f"record on {stream.name}")
        recorded.append(t)

    monkeypatch.setattr(torch.Tensor, "record_stream", record_stream, raising=False)
    fuse = EDFuse(16, 8, 12)
    runner = EDFuseRunner(fuse, torch.device("cuda"), side)
    made: list = []
    token_stream = runner._token_stream
    runner._token_stream = lambda x: made.append(token_stream(x)) or made[-1]
    return fuse, runner, log, made, recorded


def test_side_stream_tensor_is_recorded_on_the_main_stream(fake_cuda) -> None:
    fuse, runner, log, made, recorded = fake_cuda
    f, e = torch.randn(5, 16), torch.randn(5, 8)
    with torch.no_grad():
        out = runner(f, e)
        torch.testing.assert_close(out, fuse(f, e))
    assert log == ["side waits main", "enter side", "leave side", "main waits side", "record on main"]
    assert len(made) == 1 and len(recorded) == 1 and recorded[0] is made[0]  # up_pre, the side stream's output


def test_grad_mode_runs_the_differentiable_module(fake_cuda) -> None:
    """Under autograd the (inference-only) kernel path is not taken; values and gradients are eager's."""
    fuse, runner, log, made, _ = fake_cuda
    f, e = torch.randn(5, 16, requires_grad=True), torch.randn(5, 8)
    out = runner(f, e)
    assert not log and not made
    out.square().sum().backward()
    got = [p.grad.clone() for p in fuse.parameters()] + [f.grad.clone()]
    fuse.zero_grad()
    f.grad = None
    fuse(f, e).square().sum().backward()
    for g, want in zip(got, [p.grad for p in fuse.parameters()] + [f.grad]):
        torch.testing.assert_close(g, want)


def test_chunked_cuda_path_runs_without_the_side_stream(fake_cuda) -> None:
    """Row chunks run one after another on the current stream: no fork/join, no record_stream."""
    fuse, runner, log, made, recorded = fake_cuda
    runner.chunk_bytes = 2 * 12 * 4  # two rows of a 12-wide float32 temporary
    f, e = torch.randn(5, 16), torch.randn(5, 8)
    with torch.no_grad():
        out = runner(f, e)
    assert not log and not recorded and [t.shape[0] for t in made] == [2, 2, 1]
    torch.testing.assert_close(out, fuse(f, e))


@pytest.mark.parametrize("rows, max_rows", [(0, 4), (1, 4), (4, 4), (5, 4), (10, 4), (8192, 1170), (8193, 1170)])
def test_chunk_bounds_are_few_near_equal_and_cover_the_rows(rows: int, max_rows: int) -> None:
    bounds = chunk_bounds(rows, max_rows)
    sizes = [b - a for a, b in bounds]
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(prev[1] == nxt[0] for prev, nxt in zip(bounds, bounds[1:]))
    assert len(bounds) == max(1, -(-rows // max_rows)) and max(sizes) <= max_rows and max(sizes) - min(sizes) <= 1


def test_chunk_rows_follow_the_byte_bound() -> None:
    """At the paper's m = 14336 (Llama-3-8B FFN) an 8192-token prefill runs as 8 chunks of 1024 rows in bf16."""
    runner = EDFuseRunner(EDFuse(16, 8, 14336), torch.device("cpu"))
    assert runner.max_rows(torch.bfloat16) == 1170 and runner.max_rows(torch.float32) == 585
    assert chunk_bounds(8192, runner.max_rows(torch.bfloat16)) == [(i * 1024, (i + 1) * 1024) for i in range(8)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_forward_matches_one_call_and_is_bounded(dtype: torch.dtype) -> None:
    """The shipped SmolLM2 draft's EDFuse shape, 600 rows in chunks of 150: one call's values to
    rounding (torch 2.14's CPU GEMM blocks by row count, so 150 and 600 rows can differ in the last
    bit), and no gate/up output larger than the bound."""
    torch.manual_seed(0)
    fuse = EDFuse(2 * 576, 576, 1536).to(dtype)
    f, e = torch.randn(600, 2 * 576, dtype=dtype), torch.randn(600, 576, dtype=dtype)
    bound = 150 * 1536 * dtype.itemsize
    seen: list[int] = []
    for layer in (fuse.gate, fuse.up):
        layer.register_forward_hook(lambda module, args, out: seen.append(out.nbytes))
    with torch.no_grad():
        chunked = EDFuseRunner(fuse, torch.device("cpu"), chunk_bytes=bound)(f, e)
        calls = list(seen)
        whole = fuse(f, e)
    torch.testing.assert_close(chunked, whole)  # the dtype's rounding tolerance: a wrong chunk is far off
    assert len(calls) == 8 and max(calls) == bound  # 4 chunks x (gate, up), each exactly at the bound


def test_side_stream_needs_cuda() -> None:
    with pytest.raises(ValueError, match="side stream needs a CUDA device"):
        EDFuseRunner(EDFuse(16, 8, 12), torch.device("cpu"), side_stream=object())


def _cuda_runner(fuse: EDFuse, side_stream: bool) -> EDFuseRunner:
    return EDFuseRunner(fuse, torch.device("cuda"), torch.cuda.Stream() if side_stream else None)


@cuda
@pytest.mark.parametrize("side_stream", [True, False])
def test_cuda_streams_match_eager(side_stream: bool) -> None:
    fuse = EDFuse(2 * 4096, 4096, 14336).cuda().half()
    runner = _cuda_runner(fuse, side_stream)
    f = torch.randn(64, 2 * 4096, device="cuda", dtype=torch.half)
    e = torch.randn(64, 4096, device="cuda", dtype=torch.half)
    with torch.no_grad():
        torch.testing.assert_close(runner(f, e), fuse(f, e), atol=2e-2, rtol=2e-2)


@cuda
def test_cuda_runner_under_grad_mode_gives_eager_gradients() -> None:
    fuse = EDFuse(2 * 512, 512, 1536).cuda()
    runner = _cuda_runner(fuse, True)
    f = torch.randn(8, 2 * 512, device="cuda", requires_grad=True)
    e = torch.randn(8, 512, device="cuda")
    runner(f, e).sum().backward()
    got = f.grad.clone()
    f.grad = None
    fuse(f, e).sum().backward()
    torch.testing.assert_close(got, f.grad)


@cuda
@pytest.mark.parametrize("side_stream", [True, False])
def test_cuda_graph_capture_and_replay(side_stream: bool) -> None:
    fuse = EDFuse(2 * 2048, 2048, 8192).cuda().half()
    runner = _cuda_runner(fuse, side_stream)
    f = torch.randn(16, 2 * 2048, device="cuda", dtype=torch.half)
    e = torch.randn(16, 2048, device="cuda", dtype=torch.half)
    with torch.no_grad():
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
