"""Batch throughput (paper Tab. 4): output tokens/s at a sweep of concurrent batch sizes.

No speculation, EAGLE-3 and EDSD are measured side by side in one run: for each server in
turn, SGLang's load generator keeps `B` requests in flight (`--max-concurrency B`, all sent at
once) over `max(2B, 4)` prompts drawn from the five task sets, each decoding a fixed number
of tokens. Reported: output tokens/s per configuration and batch size, and the ratios
EDSD/EAGLE-3 and EDSD/no-spec. Defaults suit this CPU; on a GPU use e.g.
`--device cuda --batch-sizes 8 16 32 64 128 256`.

    python benchmarks/bench_throughput.py [--quick] [--batch-sizes 1 2 4 8 16] [--throughput-output-len 64]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import harness
from serving_load import run_load, write_dataset
from tqdm import tqdm

NAME = "throughput"


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default 1 2 4 8 16 (quick: 1 4)")
    p.add_argument("--throughput-output-len", type=int, default=None, help="tokens per request (default 64, quick 16)")


def set_defaults(args: argparse.Namespace) -> None:
    args.batch_sizes = args.batch_sizes or ([1, 4] if args.quick else [1, 2, 4, 8, 16])
    args.throughput_output_len = args.throughput_output_len or (16 if args.quick else 64)


def configs(args: argparse.Namespace) -> list[harness.ServeConfig]:
    return harness.standard_configs(args)


def prepare(args: argparse.Namespace, workdir: Path) -> Path:
    records = harness.prompt_records(args, per_task=max(args.batch_sizes) * 2)
    return write_dataset(records, workdir / "throughput-prompts.jsonl")


def measure_on(server: Any, cfg: harness.ServeConfig, args: argparse.Namespace, dataset: Path) -> dict[str, Any]:
    return {
        str(b): run_load(
            server, harness.model_path(args), dataset, max(2 * b, 4), args.throughput_output_len, max_concurrency=b
        )
        for b in tqdm(args.batch_sizes, desc=f"{NAME} {cfg.name}", unit="batch size")
    }


def report(results: dict[str, Any], args: argparse.Namespace, png: Path) -> str:
    names = list(results)
    ratios = [n for n in ("eagle3", "none") if "edsd" in results and n in results]
    rows = []
    for b in map(str, args.batch_sizes):
        tps = {n: results[n][b]["output_throughput"] for n in names}
        rows.append([int(b)] + [tps[n] for n in names] + [tps["edsd"] / tps[n] for n in ratios])
    _plot(results, args.batch_sizes, png)
    shape = harness.standard_configs(args)[-1].shape
    return (
        f"Batch throughput: output tokens/s, {args.throughput_output_len} tokens per request, speculation as "
        f"{shape} ({args.dtype}, {args.device})\n\n"
        + harness.markdown_table(["batch size"] + [f"{n} tok/s" for n in names] + [f"edsd/{n}" for n in ratios], rows)
    )


def _plot(results: dict[str, Any], batch_sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in results.items():
        ax.plot(batch_sizes, [rows[str(b)]["output_throughput"] for b in batch_sizes], "o-", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("output tokens/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    import sys

    harness.question_main(sys.modules[__name__], __doc__)
