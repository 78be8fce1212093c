"""Microbenchmark the EDFuse Triton kernels against eager PyTorch and torch.compile.

Both ops are memory-bound, so each result is reported as time, achieved GB/s (the bytes
the op must move: LayerNorm reads x and writes y; SiLU*mul reads two rows x E tensors and
writes one) and as a % of the device's measured copy bandwidth. The same byte count is used
for every provider, so eager's extra passes (SiLU output written and re-read) show up as
lower GB/s. Small row counts are launch-bound unless --cuda-graph is given.

A second table times the whole EDFuse input module as the draft extend runs it
(`serving.edfuse_streams.EDFuseRunner`) with the side stream on and off, next to each of its
two streams alone: `hidden` is the time the side stream saved as a fraction of the shorter
stream (1.0 = fully overlapped, the issue's target).

    python benchmarks/bench_edfuse_kernels.py                  # GPU sweep, JSON in benchmarks/results/
    python benchmarks/bench_edfuse_kernels.py --interpret-smoke  # CPU, TRITON_INTERPRET=1, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PROVIDERS = ("triton", "eager", "compile")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=_ints, default=_ints("1,4,16,64,256,1024,4096,8192"))
    p.add_argument("--hidden", type=_ints, default=_ints("576,2048,4096,5120,8192"), help="LayerNorm widths d")
    p.add_argument("--widths", type=_ints, default=_ints("4096,14336,40960"), help="SiLU*mul widths E")
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    p.add_argument(
        "--providers",
        type=lambda s: s.split(","),
        default=list(PROVIDERS),
        help=f"comma list from {','.join(PROVIDERS)}",
    )
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument(
        "--cuda-graph", action="store_true", help="time graph replays of the --iters calls (no Python launch overhead)"
    )
    p.add_argument(
        "--stream-rows",
        type=_ints,
        default=_ints("1,16,64,256,1024,4096"),
        help="token rows of the side-stream A/B (draft-extend batch x tokens)",
    )
    p.add_argument(
        "--stream-shape",
        type=_ints,
        default=_ints("4096,14336"),
        help="d,E of the EDFuse module in the side-stream A/B (features are 2*d wide)",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help=f"JSON folder (default: {RESULTS_DIR.name}/ on a GPU, a temp dir with --interpret-smoke)",
    )
    p.add_argument(
        "--interpret-smoke",
        action="store_true",
        help="run a tiny size on CPU under TRITON_INTERPRET=1 to prove the script "
        "works; JSON goes to a temp dir, timings mean nothing",
    )
    args = p.parse_args(argv)
    unknown = set(args.providers) - set(PROVIDERS)
    if unknown:
        p.error(f"unknown providers {sorted(unknown)}")
    if args.interpret_smoke:
        if args.cuda_graph:
            p.error("--cuda-graph needs a GPU; not with --interpret-smoke")
        args.rows, args.hidden, args.widths, args.warmup, args.iters = [1, 7], [577], [1000], 1, 2
        args.stream_rows, args.stream_shape = [3], [64, 96]
    return args


def timer(device: torch.device, iters: int, cuda_graph: bool) -> Callable[[Callable[[], object]], float]:
    """Return a function timing `iters` back-to-back calls; microseconds per call."""

    def cpu(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - start) / iters * 1e6

    def cuda(fn: Callable[[], object]) -> float:
        def loop() -> None:
            for _ in range(iters):
                fn()

        run = loop
        if cuda_graph:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                loop()
            run = graph.replay
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / iters * 1e3

    return cuda if device.type == "cuda" else cpu


def copy_bandwidth_gbs(device: torch.device, nbytes: int, time_us: Callable[[Callable[[], object]], float]) -> float:
    """Achievable bandwidth: a large device copy moves 2 * nbytes (read + write)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2 * nbytes / time_us(lambda: dst.copy_(src)) / 1e3


def _warm_up(fn: Callable[[], object], n: int, device: torch.device) -> None:
    """Compile and load everything on a side stream, as CUDA-graph capture requires."""
    if device.type != "cuda":
        for _ in range(n):
            fn()
        return
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(n):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()


Fn = Callable[[], torch.Tensor]


def make_case(
    op: str, rows: int, width: int, dtype: torch.dtype, device: torch.device
) -> tuple[int, dict[str, Fn], Fn]:
    """(bytes moved, {provider: fn}, reference fn) for one op and size."""
    from sglang_edsd import kernels  # after TRITON_INTERPRET is settled

    es = torch.finfo(dtype).bits // 8
    if op == "layernorm":
        x = torch.randn(rows, width, device=device, dtype=dtype)
        w, b = torch.randn(width, device=device, dtype=dtype), torch.randn(width, device=device, dtype=dtype)
        out = torch.empty_like(x)

        def eager() -> torch.Tensor:
            return F.layer_norm(x, (width,), w, b, 1e-5)

        fns = {"triton": lambda: kernels.layernorm(x, w, b, 1e-5, out=out), "eager": eager}
        nbytes = 2 * rows * width * es + 2 * width * es
    else:
        g, u = (torch.randn(rows, width, device=device, dtype=dtype) for _ in range(2))
        out = torch.empty_like(g)

        def eager() -> torch.Tensor:
            return F.silu(g) * u

        fns = {"triton": lambda: kernels.silu_mul(g, u, out=out), "eager": eager}
        nbytes = 3 * rows * width * es
    torch._dynamo.reset()  # one static graph per shape; avoids the recompile limit
    fns["compile"] = torch.compile(eager, dynamic=False)
    return nbytes, fns, eager


def run_sweep(args: argparse.Namespace, device: torch.device, copy_gbs: float) -> list[dict]:
    dtype = DTYPES[args.dtype]
    time_us = timer(device, args.iters, args.cuda_graph)
    results = []
    sizes = [("layernorm", r, d) for d in args.hidden for r in args.rows]
    sizes += [("silu_mul", r, e) for e in args.widths for r in args.rows]
    for op, rows, width in sizes:
        try:
            nbytes, fns, ref = make_case(op, rows, width, dtype, device)
            torch.testing.assert_close(fns["triton"]().float(), ref().float(), rtol=2e-2, atol=2e-2)
        except torch.OutOfMemoryError as exc:
            print(f"skip {op} rows={rows} width={width}: {exc}", file=sys.stderr)
            continue
        for provider in args.providers:
            row = {"op": op, "rows": rows, "width": width, "provider": provider, "bytes": nbytes}
            try:
                _warm_up(fns[provider], args.warmup, device)
                us = time_us(fns[provider])
                gbs = nbytes / us / 1e3
                row.update(us=us, gbs=gbs, pct_copy=100 * gbs / copy_gbs)
            except RuntimeError as exc:  # e.g. OOM, capture or compile failure
                row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            results.append(row)
        del fns
    return results


@torch.no_grad()  # as SGLang serves; the runner takes the eager module where autograd records
def run_streams(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """EDFuse as served, side stream on vs off, and each stream alone, per row count."""
    from sglang_edsd.edfuse import EDFuse
    from sglang_edsd.serving.edfuse_streams import EDFuseRunner

    d, e = args.stream_shape
    dtype = DTYPES[args.dtype]
    fuse = EDFuse(2 * d, d, e).to(device=device, dtype=dtype)
    on = EDFuseRunner(fuse, device, torch.cuda.Stream() if device.type == "cuda" else None)
    off = EDFuseRunner(fuse, device)
    time_us = timer(device, args.iters, args.cuda_graph)
    results = []
    for rows in args.stream_rows:
        feats = torch.randn(rows, 2 * d, device=device, dtype=dtype)
        embeds = torch.randn(rows, d, device=device, dtype=dtype)
        torch.testing.assert_close(on(feats, embeds).float(), off(feats, embeds).float(), rtol=2e-2, atol=2e-2)
        fns = {
            "side_stream": lambda f=feats, x=embeds: on(f, x),
            "one_stream": lambda f=feats, x=embeds: off(f, x),
            "feature_stream_alone": lambda f=feats: fuse.gate(f),
            "token_stream_alone": lambda x=embeds: on._token_stream(x),
        }
        row: dict = {"rows": rows, "d": d, "E": e, "side_stream_available": on.side_stream is not None}
        for name, fn in fns.items():
            _warm_up(fn, args.warmup, device)
            row[f"{name}_us"] = time_us(fn)
        shorter = min(row["feature_stream_alone_us"], row["token_stream_alone_us"])
        row["hidden"] = (row["one_stream_us"] - row["side_stream_us"]) / shorter
        results.append(row)
    return results


def streams_markdown(results: list[dict]) -> str:
    head = "| rows | d | E | one stream µs | side stream µs | feature stream µs | token stream µs | hidden |"
    lines = [head, "|" + "---|" * 8]
    lines += [
        f"| {r['rows']} | {r['d']} | {r['E']} | {r['one_stream_us']:.1f} | {r['side_stream_us']:.1f} | "
        f"{r['feature_stream_alone_us']:.1f} | {r['token_stream_alone_us']:.1f} | {r['hidden']:.2f} |"
        for r in results
    ]
    return "\n".join(lines)


def markdown(results: list[dict], providers: list[str]) -> str:
    by_size: dict[tuple, dict[str, dict]] = {}
    for r in results:
        by_size.setdefault((r["op"], r["rows"], r["width"], r["bytes"]), {})[r["provider"]] = r

    def cell(r: dict | None) -> str:
        return "err" if r is None or "error" in r else f"{r['us']:.1f} µs, {r['gbs']:.1f} GB/s ({r['pct_copy']:.0f}%)"

    head = "| op | rows | width | MB | " + " | ".join(providers) + " | triton speedup vs eager |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for (op, rows, width, nbytes), rs in by_size.items():
        t, e = rs.get("triton", {}), rs.get("eager", {})
        speedup = f"{e['us'] / t['us']:.2f}x" if "us" in t and "us" in e else "-"
        lines.append(
            f"| {op} | {rows} | {width} | {nbytes / 1e6:.3g} | "
            + " | ".join(cell(rs.get(p)) for p in providers)
            + f" | {speedup} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.interpret_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # must precede importing sglang_edsd.kernels
        device, device_name, copy_bytes = torch.device("cpu"), "cpu-interpret-smoke", 16 << 20
    else:
        if not torch.cuda.is_available():
            print(
                "bench_edfuse_kernels: no CUDA device found. This benchmark times GPU kernels; "
                "run it on a GPU machine, or pass --interpret-smoke for a CPU end-to-end check.",
                file=sys.stderr,
            )
            return 2
        if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
            print("bench_edfuse_kernels: unset TRITON_INTERPRET to time compiled kernels.", file=sys.stderr)
            return 2
        device, device_name, copy_bytes = torch.device("cuda"), torch.cuda.get_device_name(), 1 << 30
    import triton

    copy_gbs = copy_bandwidth_gbs(device, copy_bytes, timer(device, max(args.iters // 10, 2), False))
    results = run_sweep(args, device, copy_gbs)
    print(
        f"device: {device_name}  dtype: {args.dtype}  copy bandwidth: {copy_gbs:.0f} GB/s  "
        f"cuda-graph: {args.cuda_graph}\n"
    )
    print(markdown(results, args.providers))
    streams = run_streams(args, device)
    print(f"\nEDFuse as served, side stream on vs off ({args.dtype}):\n")
    print(streams_markdown(streams))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")
    out_dir = args.out_dir or (
        Path(tempfile.mkdtemp(prefix="edfuse-kernels-smoke-")) if args.interpret_smoke else RESULTS_DIR
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"edfuse-kernels-{slug}-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "device": device_name,
                "torch": torch.__version__,
                "triton": triton.__version__,
                "dtype": args.dtype,
                "cuda_graph": args.cuda_graph,
                "iters": args.iters,
                "copy_bandwidth_gbs": copy_gbs,
                "timestamp": stamp,
                "results": results,
                "streams": streams,
            },
            indent=1,
        )
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
