"""EDFuse Triton kernels against PyTorch: under the Triton interpreter on CPU, and on CUDA.

Interpreter checks run in one subprocess with TRITON_INTERPRET=1 (the mode is fixed when
the kernels module is imported), so the result never depends on which test imported Triton
first; each case is still reported as its own test here.

Oracle: the PyTorch op in fp32 on the same (already rounded) inputs. The kernels compute in
fp32 and round once, so the bound is one rounding to the output dtype: 2^-7 relative for
bf16 (the interpreter casts fp32->bf16 by truncation; GPUs round to nearest, 2^-8) and
2^-10 for fp16 (2x the round-to-nearest bound), plus a small absolute floor for values near
zero. Findings in this environment (triton 3.8.0): the interpreter holds bf16 as uint16, so
native bf16 arithmetic inside a kernel yields garbage (integer maths on bit patterns), while
bf16 load/store and bf16<->fp32 casts work, which is all these kernels do with bf16.
Outputs are pre-filled with NaN so an unwritten element fails the comparison.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sglang_edsd import kernels
from sglang_edsd.edfuse import EDFuse

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# (rtol, atol) per dtype: one rounding to the output dtype, fp32-compute noise in atol.
LN_TOL = {"fp32": (1e-5, 1e-5), "bf16": (2**-7 + 1e-5, 1e-5), "fp16": (2**-10, 1e-5)}
SILU_TOL = {"fp32": (2e-6, 1e-7), "bf16": (2**-7 + 2e-6, 1e-7), "fp16": (2**-10, 1e-7)}
# End to end (three GEMMs in the dtype): max-abs error relative to max |reference|.
EDFUSE_TOL = {"fp32": 1e-5, "bf16": 2e-2, "fp16": 2e-3}
CHILD_FLAG = "--interpret-child"


def _gen(case_id: str) -> torch.Generator:
    """Fresh, reproducible inputs per case."""
    return torch.Generator().manual_seed(zlib.crc32(case_id.encode()))


def _randn(
    shape: tuple[int, ...],
    gen: torch.Generator,
    dtype: torch.dtype,
    device: str,
    scale: float = 1.0,
    shift: float = 0.0,
) -> torch.Tensor:
    return (torch.randn(shape, generator=gen) * scale + shift).to(device=device, dtype=dtype)


def check_layernorm(
    case_id: str,
    shape: tuple[int, ...],
    dtype: str,
    device: str,
    shift: float = 0.0,
    out_mode: str = "poisoned",
    config: str = "current",
) -> None:
    """out_mode: 'poisoned' (NaN-filled out=), 'alloc' (wrapper allocates), 'inplace' (out=x);
    config: a name in kernels.LAYERNORM_CANDIDATES."""
    gen, dt, d = _gen(case_id), DTYPES[dtype], shape[-1]
    x = _randn(shape, gen, dt, device, scale=3.0, shift=shift)
    w = _randn((d,), gen, dt, device, scale=0.2, shift=1.0)
    b = _randn((d,), gen, dt, device, scale=0.5)
    ref = F.layer_norm(x.float(), (d,), w.float(), b.float(), eps=1e-5)
    launch = kernels.LAYERNORM_CANDIDATES[config]
    if out_mode == "alloc":
        got = kernels.layernorm(x, w, b, 1e-5, config=launch)
    else:
        out = x if out_mode == "inplace" else torch.full_like(x, float("nan"))
        got = kernels.layernorm(x, w, b, 1e-5, out=out, config=launch)
        assert got is out
    assert got.dtype == dt and got.shape == x.shape
    rtol, atol = LN_TOL[dtype]
    torch.testing.assert_close(got.float(), ref, rtol=rtol, atol=atol)


def check_silu_mul(
    case_id: str, shape: tuple[int, ...], dtype: str, device: str, scale: float = 1.0, out_mode: str = "poisoned"
) -> None:
    """out_mode: 'poisoned', 'alloc', 'gate' (out=gate_pre) or 'up' (out=up_pre)."""
    gen, dt = _gen(case_id), DTYPES[dtype]
    gate, up = _randn(shape, gen, dt, device, scale), _randn(shape, gen, dt, device)
    ref = F.silu(gate.float()) * up.float()
    if out_mode == "alloc":
        got = kernels.silu_mul(gate, up)
    else:
        out = {"gate": gate, "up": up}[out_mode] if out_mode != "poisoned" else torch.full_like(gate, float("nan"))
        got = kernels.silu_mul(gate, up, out=out)
        assert got is out
    assert got.dtype == dt and got.shape == gate.shape
    rtol, atol = SILU_TOL[dtype]
    torch.testing.assert_close(got.float(), ref, rtol=rtol, atol=atol)


def check_edfuse(
    case_id: str,
    rows: int,
    target_hidden: int,
    hidden: int,
    expansion: int,
    dtype: str,
    device: str,
    token_layernorm: bool = True,
) -> None:
    """fused_edfuse_forward vs EDFuse.forward in fp32 on the same dtype-rounded weights.

    Bound: the dtype's floor, or twice eager EDFuse.forward's own error in that dtype
    (GPU GEMMs may reduce in reduced precision, which no kernel choice changes)."""
    gen, dt = _gen(case_id), DTYPES[dtype]
    torch.manual_seed(zlib.crc32(case_id.encode()))
    module = EDFuse(2 * target_hidden, hidden, expansion, token_layernorm=token_layernorm)
    if token_layernorm:
        with torch.no_grad():
            module.norm.weight.normal_(1.0, 0.2)
            module.norm.bias.normal_(0.0, 0.5)
    module = module.to(device=device, dtype=dt)
    feats = _randn((rows, 2 * target_hidden), gen, dt, device)
    embeds = _randn((rows, hidden), gen, dt, device)
    with torch.inference_mode():
        ref = copy.deepcopy(module).float()(feats.float(), embeds.float())
        got = kernels.fused_edfuse_forward(module, feats, embeds)
        eager = module(feats, embeds)
    assert got.dtype == dt and got.shape == (rows, hidden)
    err, eager_err = (((t.float() - ref).abs().max() / ref.abs().max()).item() for t in (got, eager))
    bound = max(EDFUSE_TOL[dtype], 2 * eager_err)
    assert err <= bound, f"max error {err:.3g} of max |ref| > {bound:.3g} (eager: {eager_err:.3g})"


def _raises(exc: type[Exception], match: str, fn: Callable[[], object]) -> Callable[[], None]:
    def check() -> None:
        with pytest.raises(exc, match=match):
            fn()

    return check


def _error_cases(device: str) -> dict[str, Callable[[], None]]:
    """Bad calls fail with a clear message before any launch."""
    x, w = torch.randn(4, 8, device=device), torch.randn(8, device=device)
    wide = torch.randn(1, kernels.MAX_LAYERNORM_COLS + 1, device=device)
    buf = torch.randn(2, 8, device=device)
    module = EDFuse(8, 8, 16).to(device)
    return {
        "int_dtype": _raises(TypeError, "supported", lambda: kernels.silu_mul(x.int(), x.int())),
        "mixed_dtype": _raises(TypeError, "expected torch.float32", lambda: kernels.silu_mul(x, x.half())),
        "shape_mismatch": _raises(ValueError, "shape", lambda: kernels.silu_mul(x, x[:2])),
        "non_contiguous": _raises(ValueError, "contiguous", lambda: kernels.layernorm(x.t(), w[:4], w[:4])),
        "bad_weight_shape": _raises(ValueError, "weight has shape", lambda: kernels.layernorm(x, w[:4], w)),
        "out_wrong_dtype": _raises(TypeError, "out has dtype", lambda: kernels.layernorm(x, w, w, out=x.half())),
        "partial_overlap": _raises(
            ValueError,
            "partially overlaps",
            lambda: kernels.silu_mul(buf[:1], buf[:1].clone(), out=buf.view(-1)[4:12].view(1, 8)),
        ),
        "too_wide": _raises(ValueError, "columns", lambda: kernels.layernorm(wide, wide[0], wide[0])),
        "needs_no_grad": _raises(RuntimeError, "inference-only", lambda: kernels.fused_edfuse_forward(module, x, x)),
        "edfuse_width": _raises(ValueError, "gate input", lambda: kernels.fused_edfuse_forward(module, x[:, :4], x)),
    }


def _interpret_cases() -> dict[str, Callable[[], None]]:
    cases: dict[str, Callable[[], None]] = {}
    for dtype in DTYPES:
        for shape in [(1, 576), (7, 2048), (33, 4096), (7, 1000), (33, 577), (1, 8192), (7, 5120), (2, 5, 576)]:
            cid = f"layernorm-{dtype}-{'x'.join(map(str, shape))}"
            cases[cid] = partial(check_layernorm, cid, shape, dtype, "cpu")
        for shape in [(1, 40960), (3, 40960), (7, 1000), (33, 577), (33, 4096), (2, 3, 1000)]:
            cid = f"silu_mul-{dtype}-{'x'.join(map(str, shape))}"
            cases[cid] = partial(check_silu_mul, cid, shape, dtype, "cpu")
        for rows, target_hidden, hidden, expansion in [(1, 64, 96, 320), (7, 160, 577, 1000), (33, 128, 576, 2048)]:
            cid = f"edfuse-{dtype}-{rows}x{hidden}x{expansion}"
            cases[cid] = partial(check_edfuse, cid, rows, target_hidden, hidden, expansion, dtype, "cpu")
    extra = {
        # Large mean: a one-pass E[x^2]-E[x]^2 variance would cancel here.
        "layernorm-fp32-shift100-33x2048": partial(check_layernorm, shape=(33, 2048), dtype="fp32", shift=100.0),
        "layernorm-bf16-shift100-7x4096": partial(check_layernorm, shape=(7, 4096), dtype="bf16", shift=100.0),
        "layernorm-bf16-alloc-7x577": partial(check_layernorm, shape=(7, 577), dtype="bf16", out_mode="alloc"),
        "layernorm-fp16-inplace-33x1000": partial(check_layernorm, shape=(33, 1000), dtype="fp16", out_mode="inplace"),
        # |gate| up to ~100: exp(-gate) overflows to inf and SiLU must still give -0, not NaN.
        "silu_mul-fp32-scale30-7x1000": partial(check_silu_mul, shape=(7, 1000), dtype="fp32", scale=30.0),
        "silu_mul-fp16-scale30-7x1000": partial(check_silu_mul, shape=(7, 1000), dtype="fp16", scale=30.0),
        "silu_mul-bf16-alloc-3x40960": partial(check_silu_mul, shape=(3, 40960), dtype="bf16", out_mode="alloc"),
        "silu_mul-bf16-out_gate-7x577": partial(check_silu_mul, shape=(7, 577), dtype="bf16", out_mode="gate"),
        "silu_mul-fp32-out_up-7x577": partial(check_silu_mul, shape=(7, 577), dtype="fp32", out_mode="up"),
        "edfuse-bf16-no_layernorm-7x577x1000": partial(
            check_edfuse, rows=7, target_hidden=160, hidden=577, expansion=1000, dtype="bf16", token_layernorm=False
        ),
    }
    # Every candidate launch config (bench_edfuse_kernels.py times them on a GPU): several rows
    # a program with masked rows (5 of 8), several programs, evict-first loads.
    for config in kernels.LAYERNORM_CANDIDATES:
        for dtype, shape in (("bf16", (5, 577)), ("fp32", (9, 2048)), ("fp16", (3, 4096))):
            extra[f"layernorm-config-{config}-{dtype}-{'x'.join(map(str, shape))}"] = partial(
                check_layernorm, shape=shape, dtype=dtype, config=config
            )
    cases.update({cid: partial(fn, case_id=cid, device="cpu") for cid, fn in extra.items()})
    cases.update({f"error-{name}": fn for name, fn in _error_cases("cpu").items()})
    return cases


CASE_IDS = list(_interpret_cases())


def _run_interpret_cases() -> dict[str, str | None]:
    """Child side: run every case, map id -> None (pass) or the failure text."""
    assert kernels.INTERPRETED, "child must run with TRITON_INTERPRET=1"
    results: dict[str, str | None] = {}
    for cid, check in _interpret_cases().items():
        try:
            check()
            results[cid] = None
        except Exception as exc:  # noqa: BLE001 - reported per case by the parent
            results[cid] = f"{type(exc).__name__}: {exc}"
    return results


@pytest.fixture(scope="module")
def interpret_results() -> dict[str, str | None]:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, CHILD_FLAG], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"interpreter subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASE_IDS)
def test_kernel_under_interpreter(case: str, interpret_results: dict[str, str | None]) -> None:
    assert case in interpret_results, f"{case} did not run in the interpreter subprocess"
    if interpret_results[case] is not None:
        pytest.fail(interpret_results[case])


@pytest.mark.skipif(kernels.INTERPRETED, reason="compiled mode only")
def test_compiled_mode_rejects_cpu_tensors() -> None:
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match="need cuda tensors"):
        kernels.silu_mul(x, x)


requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or kernels.INTERPRETED, reason="needs a CUDA device and compiled Triton"
)


@requires_cuda
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_cuda_kernels_match_torch(dtype: str) -> None:
    for shape in [(1, 576), (7, 1000), (33, 4096), (1, 8192), (4096, 5120), (8192, 576)]:
        check_layernorm(f"cuda-ln-{dtype}-{shape}", shape, dtype, "cuda")
    check_layernorm(f"cuda-ln-{dtype}-shift", (64, 2048), dtype, "cuda", shift=100.0)
    for shape in [(1, 40960), (7, 577), (2048, 14336), (512, 40960)]:
        check_silu_mul(f"cuda-sm-{dtype}-{shape}", shape, dtype, "cuda")
    check_silu_mul(f"cuda-sm-{dtype}-inplace", (33, 40960), dtype, "cuda", out_mode="gate")
    check_silu_mul(f"cuda-sm-{dtype}-scale", (7, 1000), dtype, "cuda", scale=30.0)
    for rows, hidden, expansion in [(1, 576, 1536), (33, 2048, 8192), (257, 4096, 14336)]:
        check_edfuse(f"cuda-edfuse-{dtype}-{rows}", rows, hidden, hidden, expansion, dtype, "cuda")
    for check in _error_cases("cuda").values():
        check()


def _warm_up(fn: Callable[[], object]) -> None:
    """Compile/load kernels and cuBLAS handles on a side stream, outside capture."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)


@requires_cuda
def test_cuda_graph_capture_and_replay() -> None:
    """With out= given, the wrappers neither allocate nor sync, so they capture and replay.

    The first graph a process registers makes the default CUDA generator allocate its graph
    seed and offset tensors (two 512-byte blocks, 1 KiB, kept while any graph lives), inside
    `torch.cuda.graph`'s entry; a trivial graph captured and kept alive first leaves the
    measured capture only the wrappers' allocations."""
    dev, dt = "cuda", torch.bfloat16
    gen = _gen("graph")
    x, w, b = _randn((33, 4096), gen, dt, dev), _randn((4096,), gen, dt, dev), _randn((4096,), gen, dt, dev)
    gate, up = _randn((33, 14336), gen, dt, dev), _randn((33, 14336), gen, dt, dev)
    ln_out, sm_out = torch.empty_like(x), torch.empty_like(gate)

    def step() -> None:
        kernels.layernorm(x, w, b, 1e-5, out=ln_out)
        kernels.silu_mul(gate, up, out=sm_out)

    _warm_up(step)
    primer, primer_buf = torch.cuda.CUDAGraph(), torch.zeros(1, device=dev)
    with torch.cuda.graph(primer):
        primer_buf.add_(1)
    graph, allocated = torch.cuda.CUDAGraph(), torch.cuda.memory_allocated()
    with torch.cuda.graph(graph):  # entering syncs on purpose, so the sync check goes inside
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.cuda.memory_allocated() == allocated
    for _ in range(2):
        for t in (x, gate, up):
            t.copy_(_randn(tuple(t.shape), gen, dt, dev))
        ln_out.fill_(float("nan"))
        sm_out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated() == allocated
        rtol, atol = LN_TOL["bf16"]
        torch.testing.assert_close(
            ln_out.float(), F.layer_norm(x.float(), (4096,), w.float(), b.float()), rtol=rtol, atol=atol
        )
        rtol, atol = SILU_TOL["bf16"]
        torch.testing.assert_close(sm_out.float(), F.silu(gate.float()) * up.float(), rtol=rtol, atol=atol)


@requires_cuda
def test_cuda_graph_fused_forward() -> None:
    module = EDFuse(2 * 2048, 2048, 8192).to("cuda", torch.bfloat16)
    gen = _gen("graph-fused")
    feats, embeds = _randn((33, 4096), gen, torch.bfloat16, "cuda"), _randn((33, 2048), gen, torch.bfloat16, "cuda")
    with torch.no_grad():
        _warm_up(lambda: kernels.fused_edfuse_forward(module, feats, embeds))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = kernels.fused_edfuse_forward(module, feats, embeds)
        feats.copy_(_randn((33, 4096), gen, torch.bfloat16, "cuda"))
        graph.replay()
        ref = module.float()(feats.float(), embeds.float())
    torch.cuda.synchronize()
    err = ((out.float() - ref).abs().max() / ref.abs().max()).item()
    assert err <= EDFUSE_TOL["bf16"]


if __name__ == "__main__" and sys.argv[1:] == [CHILD_FLAG]:
    print(json.dumps(_run_interpret_cases()))


def test_microbenchmark_runs_end_to_end_on_cpu(tmp_path) -> None:
    """The GPU microbenchmark's whole path (kernel sweep, path table with the rule, LayerNorm
    config sweep, JSON) under the interpreter, so a user's GPU run does not fail on the script
    itself. Timings mean nothing."""
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "bench_edfuse_kernels.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, script, "--interpret-smoke", "--providers", "triton,eager"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(Path(proc.stdout.rsplit("wrote ", 1)[1].strip()).read_text())
    assert {r["provider"] for r in report["results"]} == {"triton", "eager"}
    assert all("us" in r for r in report["results"])
    (streams,) = report["streams"]
    assert streams["rows"] == 3 and not streams["side_stream_available"]  # one stream on CPU
    assert set(streams["paths_us"]) == {"eager", "triton"} and all(v > 0 for v in streams["paths_us"].values())
    assert streams["rule_path"] == "eager" and streams["rule_path_not_slower_than_eager"]  # the CPU runner's path
    assert streams["rule_us"] > 0 and streams["feature_stream_alone_us"] > 0 and streams["token_stream_alone_us"] > 0
    assert report["streams_summary"]["shapes"] == report["streams_summary"]["rule_path_not_slower_than_eager"] == 1
    configs = report["layernorm_configs"]  # every candidate, checked against F.layer_norm, at 3 x 577
    assert [r["config"] for r in configs] == list(kernels.LAYERNORM_CANDIDATES)
    assert all(r["us"] > 0 and r["pct_same_size_copy"] > 0 for r in configs)
    assert any("same_launch_as" in r for r in configs)  # BLOCK_M is capped by the rows: one launch timed once
    assert report["layernorm_summary"]["winner"] in kernels.LAYERNORM_CANDIDATES
