"""The serving-side EDFuse runner: eager on CPU; on a GPU the path its rule picks per call.

The CUDA tests run the runner under `torch.no_grad()`, as SGLang runs the model, on each fixed
path and on the rule's; none of them needs SGLang (benchmarks/gpu_check.sh runs them on a GPU
machine without it). The stream protocol itself (fork, join, record_stream), the env
switches and the record of choices are checked on CPU with stand-in streams.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from sglang_edsd import kernels
from sglang_edsd.edfuse import EDFuse
from sglang_edsd.serving.edfuse_path import EAGER, PATHS
from sglang_edsd.serving.edfuse_streams import EDFuseRunner, chunk_bounds
from tests.helpers import edfuse_error_bound

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cpu_runner_is_the_module() -> None:
    fuse = EDFuse(16, 8, 12)
    runner = EDFuseRunner(fuse, torch.device("cpu"))
    assert runner.side_stream is None and runner.allowed == EAGER
    f, e = torch.randn(5, 16), torch.randn(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(runner(f, e), fuse(f, e), rtol=0, atol=0)
    assert runner.path_counts == {"eager": 1}


class _Stream:
    """Stand-in for a CUDA stream that logs the protocol calls."""

    def __init__(self, name: str, log: list) -> None:
        self.name, self.log = name, log

    def wait_stream(self, other: _Stream) -> None:
        self.log.append(f"{self.name} waits {other.name}")


@pytest.fixture
def fake_cuda(monkeypatch):
    """Run the CUDA code path on CPU tensors with eager halves and logged stream calls, in a
    graph's capture mode (where the rule takes the side stream; tests off the graph clear it)."""
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
    runner = EDFuseRunner(fuse, torch.device("cuda"), side, graph_mode=lambda: True)
    made: list = []
    token_stream = runner._token_stream
    runner._token_stream = lambda x, triton: made.append(token_stream(x, triton)) or made[-1]
    return fuse, runner, log, made, recorded


def test_side_stream_tensor_is_recorded_on_the_main_stream(fake_cuda) -> None:
    fuse, runner, log, made, recorded = fake_cuda
    f, e = torch.randn(5, 16), torch.randn(5, 8)
    with torch.no_grad():
        out = runner(f, e)
        torch.testing.assert_close(out, fuse(f, e))
    assert log == ["side waits main", "enter side", "leave side", "main waits side", "record on main"]
    assert len(made) == 1 and len(recorded) == 1 and recorded[0] is made[0]  # up_pre, the side stream's output
    assert runner.path_counts == {"eager+side": 1}  # the kernels are ruled out by SGLANG_EDSD_TRITON=0


def test_off_the_graph_a_small_call_runs_eager_on_one_stream(fake_cuda, monkeypatch) -> None:
    """The rule off the graph: a few rows of a small EDFuse pay for neither the fork nor the kernels."""
    fuse, runner, log, made, recorded = fake_cuda
    runner.graph_mode = None
    f, e = torch.randn(5, 16), torch.randn(5, 8)
    with torch.no_grad():
        out = runner(f, e)
        runner(f, e)
        torch.testing.assert_close(out, fuse(f, e), rtol=0, atol=0)
    assert not log and not recorded and len(made) == 2
    assert runner.path_counts == {"eager": 2}


@pytest.mark.parametrize(
    "triton, side, want",
    [("1", "1", "triton+side"), ("0", "1", "eager+side"), ("1", "0", "triton"), ("0", "0", "eager")],
)
def test_env_switches_rule_out_the_kernels_or_the_side_stream(
    fake_cuda, monkeypatch, triton: str, side: str, want: str
) -> None:
    """In a graph the rule wants both; SGLANG_EDSD_TRITON=0 / SGLANG_EDSD_SIDE_STREAM=0 force each off."""
    fuse, runner, *_ = fake_cuda
    monkeypatch.setenv("SGLANG_EDSD_TRITON", triton)
    monkeypatch.setenv("SGLANG_EDSD_SIDE_STREAM", side)
    runner = EDFuseRunner(fuse, torch.device("cuda"), runner.side_stream, graph_mode=lambda: True)
    assert runner.choose(1).name == want and runner.choose(100_000).name == want


def test_the_rule_sees_a_graph_where_graph_mode_says_so(fake_cuda, monkeypatch) -> None:
    """SGLang's capture mode is on through a graph's warm-ups and its capture, so both take the
    kernels; a stream that merely captures changes nothing (its warm-up ran the off-graph path,
    and Triton cannot load a kernel during capture)."""
    fuse, runner, *_ = fake_cuda
    monkeypatch.setenv("SGLANG_EDSD_TRITON", "1")
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    mode = [True]
    runner = EDFuseRunner(fuse, torch.device("cuda"), runner.side_stream, graph_mode=lambda: mode[0])
    assert runner.choose(5).name == "triton+side"
    mode[0] = False
    assert runner.choose(5).name == "eager"
    assert EDFuseRunner(fuse, torch.device("cuda"), runner.side_stream).choose(5).name == "eager"


def test_off_the_graph_the_crossover_at_the_8b_shape(fake_cuda, monkeypatch) -> None:
    fuse, runner, *_ = fake_cuda
    monkeypatch.setenv("SGLANG_EDSD_TRITON", "1")
    with torch.device("meta"):  # the rule reads only the weights' sizes
        big = EDFuseRunner(EDFuse(8192, 4096, 14336), torch.device("cuda"), runner.side_stream)
    assert big.weight_elements == 234_881_024
    assert big.choose(425).name == "eager" and big.choose(426).name == "triton+side"


def test_a_fixed_path_is_taken_as_is(fake_cuda, monkeypatch) -> None:
    """The benchmark's alternatives: a given path ignores the rule (here: off the graph, which
    would pick eager on one stream) and the env switches."""
    fuse, runner, log, made, recorded = fake_cuda
    monkeypatch.setenv("SGLANG_EDSD_SIDE_STREAM", "0")
    fixed = EDFuseRunner(fuse, torch.device("cuda"), runner.side_stream, path=PATHS["eager+side"])
    f, e = torch.randn(5, 16), torch.randn(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(fixed(f, e), fuse(f, e), rtol=0, atol=0)
    assert log[0] == "side waits main" and len(recorded) == 1
    assert fixed.path_counts == {"eager+side": 1}


def test_a_fixed_path_needs_what_it_runs_on() -> None:
    fuse = EDFuse(16, 8, 12)
    with pytest.raises(ValueError, match="needs a side stream"):
        EDFuseRunner(fuse, torch.device("cuda"), path=PATHS["eager+side"])
    elsewhere = "cpu" if kernels.KERNEL_DEVICE_TYPE == "cuda" else "cuda"
    with pytest.raises(ValueError, match="runs the kernels on"):
        EDFuseRunner(fuse, torch.device(elsewhere), path=PATHS["triton"])


def test_grad_mode_runs_the_differentiable_module(fake_cuda) -> None:
    """Under autograd the (inference-only) kernel path is not taken; values and gradients are eager's."""
    fuse, runner, log, made, _ = fake_cuda
    f, e = torch.randn(5, 16, requires_grad=True), torch.randn(5, 8)
    out = runner(f, e)
    assert not log and not made and runner.path_counts == {"eager": 1}
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
    assert runner.path_counts == {"eager": 1}  # under capture, with the side stream dropped for the chunks
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
    rounding, and no gate/up output larger than the byte bound.

    A CPU GEMM may compute a row differently at 150 and at 600 rows, and near-zero outputs make
    any rtol/atol pair arbitrary (torch 2.11 put 24 of 345600 bf16 outputs outside
    assert_close's default tolerance, by up to 1.5e-4). So the tolerance is derived: both results
    lie within `edfuse_error_bound` of the float64 forward, hence within twice it of each other.
    The bound is worst case: on torch 2.14's CPU GEMM each result's error reaches 0.01 of it in
    bf16, and |chunked - whole| / bound (printed) is 0.0023 in bf16 and 4.3e-6 in fp32 (up to
    0.0045 and 2e-5 over other seeds and shapes). Rows shifted by one must break it somewhere."""
    torch.manual_seed(0)
    fuse = EDFuse(2 * 576, 576, 1536).to(dtype)
    f, e = torch.randn(600, 2 * 576, dtype=dtype), torch.randn(600, 576, dtype=dtype)
    chunk_bytes = 150 * 1536 * dtype.itemsize
    seen: list[int] = []
    for layer in (fuse.gate, fuse.up):
        layer.register_forward_hook(lambda module, args, out: seen.append(out.nbytes))
    with torch.no_grad():
        chunked = EDFuseRunner(fuse, torch.device("cpu"), chunk_bytes=chunk_bytes)(f, e).double()
        calls = list(seen)
        whole = fuse(f, e).double()
    assert len(calls) == 8 and max(calls) == chunk_bytes  # 4 chunks x (gate, up), each exactly at the bound
    exact, bound = edfuse_error_bound(fuse, f, e)
    for name, got in (("chunked", chunked), ("whole", whole)):
        ratio = ((got - exact).abs() / bound).max().item()
        assert ratio <= 1, f"{name}: |error| is {ratio:.3g} x its bound"
    ratio = ((chunked - whole).abs() / bound).max().item()
    print(f"{dtype}: max |chunked - whole| / bound = {ratio:.3g}")
    assert ratio <= 2, f"|chunked - whole| is {ratio:.3g} x the bound"
    assert ((chunked.roll(1, 0) - whole).abs() > 2 * bound).any()


def test_side_stream_needs_cuda() -> None:
    with pytest.raises(ValueError, match="side stream needs a CUDA device"):
        EDFuseRunner(EDFuse(16, 8, 12), torch.device("cpu"), side_stream=object())


def _cuda_runner(fuse: EDFuse, side_stream: bool, **kwargs) -> EDFuseRunner:
    return EDFuseRunner(fuse, torch.device("cuda"), torch.cuda.Stream() if side_stream else None, **kwargs)


@cuda
@pytest.mark.parametrize("path", [*PATHS, "rule"])
def test_cuda_paths_match_eager(path: str) -> None:
    with torch.device("cuda"):  # initialised in place: 235 M weights
        fuse = EDFuse(2 * 4096, 4096, 14336).half()
    runner = _cuda_runner(fuse, True, path=PATHS.get(path))
    f = torch.randn(64, 2 * 4096, device="cuda", dtype=torch.half)
    e = torch.randn(64, 4096, device="cuda", dtype=torch.half)
    with torch.no_grad():
        torch.testing.assert_close(runner(f, e), fuse(f, e), atol=2e-2, rtol=2e-2)
    assert runner.path_counts == {"eager" if path == "rule" else path: 1}  # the rule: 64 rows, off the graph


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
@pytest.mark.parametrize("announced", [True, False])
@pytest.mark.parametrize("side_stream", [True, False])
def test_cuda_graph_capture_and_replay(side_stream: bool, announced: bool) -> None:
    """Warm-up and capture as SGLang runs them: in its capture mode both take the kernels (and
    the side stream); unannounced, both take the off-graph path (16 rows: eager, one stream)."""
    fuse = EDFuse(2 * 2048, 2048, 8192).cuda().half()
    runner = _cuda_runner(fuse, side_stream, graph_mode=lambda: announced)
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
    side = "+side" if side_stream else ""
    assert runner.path_counts == ({f"triton{side}": 2} if announced else {"eager": 2})
