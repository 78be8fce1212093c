"""Microbenchmark the EDFuse Triton kernels against eager PyTorch and torch.compile.

Both ops are memory-bound, so each result is reported as time, achieved GB/s (the bytes
the op must move: LayerNorm reads x and writes y; SiLU*mul reads two rows x E tensors and
writes one) and as a % of the device's measured copy bandwidth. The same byte count is used
for every provider, so eager's extra passes (SiLU output written and re-read) show up as
lower GB/s. Small row counts are launch-bound unless --cuda-graph is given.

A second table times the whole EDFuse input module as the draft extend runs it
(`serving.edfuse_streams.EDFuseRunner`) on each of its four paths (Triton or eager
elementwise work, side stream or one) and on the path its rule picks, next to each of its two
streams alone. Per shape it names the rule's path, the fastest path, and checks that the
rule's path is not slower than eager PyTorch on one stream; a summary line counts both.
`hidden` is the time the side stream saved on the Triton path as a fraction of the shorter
stream (1.0 = fully overlapped). Paths and the rule take turns over ROUNDS rounds (best of
each), so clock drift falls on all of them alike.

A third part, `--parts layernorm-configs` (with --cuda-graph), times each candidate launch
config of the LayerNorm kernel (`kernels.LAYERNORM_CANDIDATES`) at >= 64 MB, as a % of the
copy bandwidth and of a copy of the same bytes timed the same way (what that size allows),
with the kernel's registers and spills, and names the config with the best worst shape.

    python benchmarks/bench_edfuse_kernels.py                  # GPU sweep, JSON in benchmarks/results/
    python benchmarks/bench_edfuse_kernels.py --parts layernorm-configs --cuda-graph
    python benchmarks/bench_edfuse_kernels.py --interpret-smoke  # CPU, TRITON_INTERPRET=1, tiny sizes, every part
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PROVIDERS = ("triton", "eager", "compile")
PARTS = ("kernels", "streams", "layernorm-configs")
# Turns each compared function takes (--iters split among them); each reports its best turn.
ROUNDS = 3
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
        "--parts",
        type=lambda s: s.split(","),
        default=["kernels", "streams"],
        help=f"comma list from {','.join(PARTS)} (layernorm-configs needs --cuda-graph)",
    )
    p.add_argument("--ln-rows", type=_ints, default=_ints("4096,8192"), help="rows of the LayerNorm config sweep")
    p.add_argument("--ln-hidden", type=_ints, default=_ints("4096,8192"), help="d of the LayerNorm config sweep")
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
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}")
    if args.interpret_smoke:
        if args.cuda_graph:
            p.error("--cuda-graph needs a GPU; not with --interpret-smoke")
        args.rows, args.hidden, args.widths, args.warmup, args.iters = [1, 7], [577], [1000], 1, 2
        args.stream_rows, args.stream_shape = [3], [64, 96]
        args.parts, args.ln_rows, args.ln_hidden = list(PARTS), [3], [577]
    elif "layernorm-configs" in args.parts and not args.cuda_graph:
        p.error("layernorm-configs compares kernels at their bandwidth: add --cuda-graph")
    return args


Prepare = Callable[[Callable[[], object]], Callable[[], float]]


def timer(device: torch.device, iters: int, cuda_graph: bool) -> Prepare:
    """Return `prepare(fn)`: it readies `iters` back-to-back calls of fn (with cuda_graph,
    captured once) and returns a function that runs them and gives microseconds per call."""

    def prepare(fn: Callable[[], object]) -> Callable[[], float]:
        def loop() -> None:
            for _ in range(iters):
                fn()

        if device.type != "cuda":

            def cpu() -> float:
                start = time.perf_counter()
                loop()
                return (time.perf_counter() - start) / iters * 1e6

            return cpu
        run = loop
        if cuda_graph:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                loop()
            run = graph.replay

        def cuda() -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            run()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / iters * 1e3

        return cuda

    return prepare


def time_rounds(prepare: Prepare, fns: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Microseconds per call of each fn: the best of ROUNDS turns, the fns taking turns so that
    drift (clocks, heat) falls on all alike (the first H200 run timed one path twice, 5% apart)."""
    runs = {name: prepare(fn) for name, fn in fns.items()}
    best = dict.fromkeys(runs, math.inf)
    for _ in range(ROUNDS):
        for name, run in runs.items():
            best[name] = min(best[name], run())
    return best


def copy_bandwidth_gbs(device: torch.device, nbytes: int, prepare: Prepare) -> float:
    """Achievable bandwidth: a large device copy moves 2 * nbytes (read + write)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2 * nbytes / prepare(lambda: dst.copy_(src))() / 1e3


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
    prepare = timer(device, args.iters, args.cuda_graph)
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
                us = prepare(fns[provider])()
                gbs = nbytes / us / 1e3
                row.update(us=us, gbs=gbs, pct_copy=100 * gbs / copy_gbs)
            except RuntimeError as exc:  # e.g. OOM, capture or compile failure
                row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            results.append(row)
        del fns
    return results


@torch.no_grad()  # as SGLang serves; the runner takes the eager module where autograd records
def run_streams(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """EDFuse as served, per row count: each path, the rule's path, and each stream alone."""
    from sglang_edsd import kernels
    from sglang_edsd.edfuse import EDFuse
    from sglang_edsd.serving.edfuse_path import PATHS
    from sglang_edsd.serving.edfuse_streams import EDFuseRunner

    d, e = args.stream_shape
    dtype = DTYPES[args.dtype]
    with torch.device(device):  # initialised in place: the 70B shape holds 940 M weights
        fuse = EDFuse(2 * d, d, e).to(dtype)
    side = torch.cuda.Stream() if device.type == "cuda" else None
    fixed = {
        name: EDFuseRunner(fuse, device, side, path=path)
        for name, path in PATHS.items()
        if side is not None or not path.side_stream
    }
    # With --cuda-graph every call, warm-ups included, is a graph's, as SGLang's capture mode says.
    rule = EDFuseRunner(fuse, device, side, graph_mode=lambda: args.cuda_graph)
    prepare = timer(device, -(-args.iters // ROUNDS), args.cuda_graph)
    results = []
    for rows in args.stream_rows:
        feats = torch.randn(rows, 2 * d, device=device, dtype=dtype)
        embeds = torch.randn(rows, d, device=device, dtype=dtype)
        fns = {name: partial(runner, feats, embeds) for name, runner in fixed.items()}
        fns["rule"] = partial(rule, feats, embeds)
        want = fns["eager"]().float()
        for fn in fns.values():
            torch.testing.assert_close(fn().float(), want, rtol=2e-2, atol=2e-2)
        fns["feature_stream_alone"] = partial(fuse.gate, feats)
        fns["token_stream_alone"] = partial(kernels.edfuse_token_stream, fuse, embeds)
        for fn in fns.values():
            _warm_up(fn, args.warmup, device)
        rule.path_counts.clear()
        us = time_rounds(prepare, fns)
        (chosen,) = rule.path_counts  # one shape, one choice (with graphs: at warm-up and capture)
        paths_us = {name: us[name] for name in fixed}
        shorter = min(us["feature_stream_alone"], us["token_stream_alone"])
        hidden = (paths_us["triton"] - paths_us["triton+side"]) / shorter if "triton+side" in paths_us else None
        results.append(
            {
                "rows": rows,
                "d": d,
                "E": e,
                "side_stream_available": side is not None,
                "paths_us": paths_us,
                "rule_path": chosen,
                "rule_us": us["rule"],
                "best_path": min(paths_us, key=paths_us.__getitem__),
                "rule_path_vs_eager": paths_us[chosen] / paths_us["eager"],
                "rule_path_not_slower_than_eager": paths_us[chosen] <= paths_us["eager"],
                "feature_stream_alone_us": us["feature_stream_alone"],
                "token_stream_alone_us": us["token_stream_alone"],
                "hidden": hidden,
            }
        )
    return results


def streams_summary(results: list[dict]) -> dict:
    return {
        "shapes": len(results),
        "rule_path_not_slower_than_eager": sum(r["rule_path_not_slower_than_eager"] for r in results),
        "rule_path_is_best": sum(r["rule_path"] == r["best_path"] for r in results),
    }


def streams_markdown(results: list[dict], summary: dict) -> str:
    from sglang_edsd.serving.edfuse_path import PATHS

    head = (
        "| rows | d | E | " + " | ".join(f"{p} µs" for p in PATHS) + " | rule's path | rule µs | fastest path | "
        "rule's path / eager | not slower than eager | feature stream µs | token stream µs | hidden |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        paths = " | ".join(f"{r['paths_us'][p]:.1f}" if p in r["paths_us"] else "-" for p in PATHS)
        hidden = "-" if r["hidden"] is None else f"{r['hidden']:.2f}"
        ok = "yes" if r["rule_path_not_slower_than_eager"] else "NO"
        lines.append(
            f"| {r['rows']} | {r['d']} | {r['E']} | {paths} | {r['rule_path']} | {r['rule_us']:.1f} | "
            f"{r['best_path']} | {r['rule_path_vs_eager']:.3f} | {ok} | "
            f"{r['feature_stream_alone_us']:.1f} | {r['token_stream_alone_us']:.1f} | {hidden} |"
        )
    n = summary["shapes"]
    lines.append(
        f"\nrule's path not slower than eager on one stream at {summary['rule_path_not_slower_than_eager']}/{n} "
        f"shapes; the fastest path at {summary['rule_path_is_best']}/{n}"
    )
    return "\n".join(lines)


def run_layernorm_configs(args: argparse.Namespace, device: torch.device, copy_gbs: float) -> list[dict]:
    """Each candidate LayerNorm launch config per --ln-hidden x --ln-rows shape, with a copy of
    the same bytes timed the same way: what a kernel of that size can reach (launch, ramp, tail)."""
    from sglang_edsd import kernels

    dtype = DTYPES[args.dtype]
    prepare = timer(device, -(-args.iters // ROUNDS), args.cuda_graph)
    results = []
    for d in args.ln_hidden:
        for rows in args.ln_rows:
            x = torch.randn(rows, d, device=device, dtype=dtype)
            w, b = torch.randn(d, device=device, dtype=dtype), torch.randn(d, device=device, dtype=dtype)
            out, src, dst = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
            ref = F.layer_norm(x.float(), (d,), w.float(), b.float(), 1e-5)
            nbytes = 2 * x.nbytes + 2 * w.nbytes
            fns: dict[str, Callable[[], object]] = {"copy": partial(dst.copy_, src)}
            shape_rows, launches = [], {}
            for name, config in kernels.LAYERNORM_CANDIDATES.items():
                block_m, _, num_warps = config.launch(rows, d)
                row = {"config": name, "rows": rows, "d": d, "bytes": nbytes, "block_m": block_m}
                row.update(num_warps=num_warps, evict_first=config.evict_first)
                launch = (block_m, num_warps, config.evict_first)
                if launch in launches:  # the same kernel and grid: timed once
                    row["same_launch_as"] = launches[launch]
                else:
                    launches[launch] = name
                    out.fill_(float("nan"))
                    handle = kernels.launch_layernorm(x, w, b, 1e-5, out, config)
                    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
                    row.update(regs=getattr(handle, "n_regs", None), spills=getattr(handle, "n_spills", None))
                    fns[name] = partial(kernels.layernorm, x, w, b, 1e-5, out=out, config=config)
                shape_rows.append(row)
            for fn in fns.values():
                _warm_up(fn, args.warmup, device)
            us = time_rounds(prepare, fns)
            copy_pct = 100 * 2 * x.nbytes / us["copy"] / 1e3 / copy_gbs
            for row in shape_rows:
                t = us[row.get("same_launch_as", row["config"])]
                gbs = nbytes / t / 1e3
                row.update(us=t, gbs=gbs, pct_copy=100 * gbs / copy_gbs, pct_same_size_copy=100 * us["copy"] / t)
                row.update(same_size_copy_us=us["copy"], same_size_copy_pct_copy=copy_pct)
            results += shape_rows
    return results


def layernorm_summary(results: list[dict]) -> dict:
    """Each config's worst shape (the claim is for every shape >= 64 MB) and the best of those."""
    worst: dict[str, float] = {}
    for r in results:
        worst[r["config"]] = min(worst.get(r["config"], math.inf), r["pct_copy"])
    winner = max(worst, key=worst.__getitem__)
    copies = [r["same_size_copy_pct_copy"] for r in results]
    return {
        "worst_pct_copy": worst,
        "winner": winner,
        "winner_worst_pct_copy": worst[winner],
        "current_worst_pct_copy": worst["current"],
        "same_size_copy_pct_copy": [min(copies), max(copies)],
    }


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def layernorm_markdown(results: list[dict], summary: dict) -> str:
    head = (
        "| config | d | rows | MB | BLOCK_M | warps | evict_first | µs | GB/s | % copy | % of same-size copy | "
        "same-size copy, % copy | regs | spills |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        name = r["config"] + (f" (= {r['same_launch_as']})" if "same_launch_as" in r else "")
        lines.append(
            f"| {name} | {r['d']} | {r['rows']} | {r['bytes'] / 1e6:.3g} | {r['block_m']} | {r['num_warps']} | "
            f"{r['evict_first']} | {r['us']:.1f} | {r['gbs']:.0f} | {r['pct_copy']:.1f} | "
            f"{r['pct_same_size_copy']:.1f} | {r['same_size_copy_pct_copy']:.1f} | "
            f"{_or_dash(r.get('regs'))} | {_or_dash(r.get('spills'))} |"
        )
    lo, hi = summary["same_size_copy_pct_copy"]
    lines.append(
        f"\nbest worst shape: {summary['winner']} at {summary['winner_worst_pct_copy']:.1f}% of copy bandwidth "
        f"(current: {summary['current_worst_pct_copy']:.1f}%); a copy of the same bytes: {lo:.1f}-{hi:.1f}%"
    )
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
    print(
        f"device: {device_name}  dtype: {args.dtype}  copy bandwidth: {copy_gbs:.0f} GB/s  "
        f"cuda-graph: {args.cuda_graph}  parts: {','.join(args.parts)}"
    )
    report: dict = {"results": [], "streams": []}
    if "kernels" in args.parts:
        report["results"] = run_sweep(args, device, copy_gbs)
        print("\n" + markdown(report["results"], args.providers))
    if "streams" in args.parts:
        report["streams"] = run_streams(args, device)
        report["streams_summary"] = streams_summary(report["streams"])
        print(f"\nEDFuse as served, per path and by the rule ({args.dtype}):\n")
        print(streams_markdown(report["streams"], report["streams_summary"]))
    if "layernorm-configs" in args.parts:
        report["layernorm_configs"] = run_layernorm_configs(args, device, copy_gbs)
        report["layernorm_summary"] = layernorm_summary(report["layernorm_configs"])
        print(f"\nLayerNorm launch configs ({args.dtype}):\n")
        print(layernorm_markdown(report["layernorm_configs"], report["layernorm_summary"]))
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
                "rounds": ROUNDS,
                "parts": args.parts,
                "copy_bandwidth_gbs": copy_gbs,
                "timestamp": stamp,
                **report,
            },
            indent=1,
        )
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
