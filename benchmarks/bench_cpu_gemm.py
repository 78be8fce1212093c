"""Per-shape cost of the target's linear layers on CPU: F.linear against the few-row route.

Shapes come from the target's config (qkv, o, gate_up, down, lm_head); rows are what a
forward pass feeds them: 1 (decode), 5 (a depth-4 chain verify), up to a prefill chunk.
Each cell is the median of `--repeats` timed calls after warm-up, float32, on the threads torch
uses by default: one weight per shape, so it stays in cache. The "model" rows are what a forward
pass really pays: every decoder layer's four GEMMs over the model's own number of distinct
weights, so each comes from memory as in a server (lm_head excluded). Writes a JSON table and
prints it; the end-to-end effect on a server is measured by bench_cpu_path.

    python benchmarks/bench_cpu_gemm.py --out benchmarks/results/cpu-gemm-smollm2.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import harness
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sglang_edsd.assets import smollm2_path
from sglang_edsd.cpu_support.gemm import few_row_linear


def target_shapes(model: Path) -> dict[str, tuple[int, int]]:
    """(out_features, in_features) of each linear layer of a Llama-architecture target."""
    c = json.loads((model / "config.json").read_text())
    head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    qkv = (c["num_attention_heads"] + 2 * c["num_key_value_heads"]) * head_dim
    h, i = c["hidden_size"], c["intermediate_size"]
    return {
        "qkv_proj": (qkv, h),
        "o_proj": (h, c["num_attention_heads"] * head_dim),
        "gate_up_proj": (2 * i, h),
        "down_proj": (h, i),
        "lm_head": (c["vocab_size"], h),
    }


def median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="target folder (default: the SmolLM2 asset)")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 2, 5, 10, 20, 64, 256])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    model = Path(args.model) if args.model else smollm2_path()
    torch.manual_seed(0)
    rows_out = []
    cells = [(name, shape, m) for name, shape in target_shapes(model).items() for m in args.rows]
    for name, (n, k), m in tqdm(cells, desc="gemm shapes", unit="cell"):
        w, x = torch.randn(n, k), torch.randn(m, k)
        rows_out.append(
            {
                "layer": name,
                "out": n,
                "in": k,
                "rows": m,
                "f_linear_ms": median_ms(lambda x=x, w=w: F.linear(x, w), args.repeats),
                "few_row_ms": median_ms(lambda x=x, w=w: few_row_linear(x, w), args.repeats),
            }
        )
    model_rows = []
    config = json.loads((model / "config.json").read_text())
    layer_shapes = [s for name, s in target_shapes(model).items() if name != "lm_head"]
    weights = [[torch.randn(*s) for s in layer_shapes] for _ in range(config["num_hidden_layers"])]
    for m in tqdm(args.rows, desc="whole-model GEMMs", unit="rows"):
        xs = {k: torch.randn(m, k) for _, k in layer_shapes}

        def all_layers(fn, xs=xs) -> None:
            for layer in weights:
                for w in layer:
                    fn(xs[w.shape[1]], w)

        model_rows.append(
            {
                "rows": m,
                "f_linear_ms": median_ms(lambda: all_layers(F.linear), max(3, args.repeats // 5)),
                "few_row_ms": median_ms(lambda: all_layers(few_row_linear), max(3, args.repeats // 5)),
            }
        )
    print(f"{'layer':14s}{'out x in':>14s}{'rows':>6s}{'F.linear ms':>13s}{'route ms':>10s}{'ratio':>7s}")
    for r in rows_out:
        print(
            f"{r['layer']:14s}{r['out']:>8d} x{r['in']:>4d}{r['rows']:>6d}{r['f_linear_ms']:13.3f}"
            f"{r['few_row_ms']:10.3f}{r['f_linear_ms'] / r['few_row_ms']:7.2f}"
        )
    for r in model_rows:
        print(f"{'all layers':28s}{r['rows']:>6d}{r['f_linear_ms']:13.3f}{r['few_row_ms']:10.3f}")
    report = {
        **harness.provenance("cpu-gemm"),
        "model": str(model),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "dtype": "float32",
        "route": "oneDNN GEMM on packed weights (sglang_edsd.cpu_support.gemm.few_row_linear)",
        "cells": rows_out,
        "whole_model": model_rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
