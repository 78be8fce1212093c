"""Latency under load (paper Tab. 5): Poisson arrivals at several request rates.

For each server in turn (no speculation, EAGLE-3, EDSD; one run), SGLang's load generator
sends requests with exponential inter-arrival times at each `--request-rates` value (req/s),
no concurrency cap, each decoding a fixed number of tokens. Reported per rate and
configuration: mean and p99 end-to-end latency and time to first token (ms). Defaults suit
this CPU (one server decodes ~7 tokens/s); on a GPU use e.g. `--device cuda --request-rates 1 2 4 8`.

    python benchmarks/bench_latency.py [--quick] [--request-rates 0.05 0.1 0.2] [--num-prompts 16]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import harness
from serving_load import run_load, write_dataset
from tqdm import tqdm

NAME = "latency"
METRICS = ("mean_e2e_latency_ms", "p99_e2e_latency_ms", "mean_ttft_ms", "p99_ttft_ms")


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--request-rates",
        type=float,
        nargs="+",
        default=None,
        help="Poisson arrival rates, req/s (default 0.05 0.1 0.2; quick 0.5)",
    )
    p.add_argument("--num-prompts", type=int, default=None, help="requests per rate (default 16, quick 4)")
    p.add_argument("--latency-output-len", type=int, default=None, help="tokens per request (default 64, quick 16)")


def set_defaults(args: argparse.Namespace) -> None:
    args.request_rates = args.request_rates or ([0.5] if args.quick else [0.05, 0.1, 0.2])
    args.num_prompts = args.num_prompts or (4 if args.quick else 16)
    args.latency_output_len = args.latency_output_len or (16 if args.quick else 64)


def configs(args: argparse.Namespace) -> list[harness.ServeConfig]:
    return harness.standard_configs(args)


def prepare(args: argparse.Namespace, workdir: Path) -> Path:
    return write_dataset(harness.prompt_records(args, per_task=args.num_prompts), workdir / "latency-prompts.jsonl")


def measure_on(server: Any, cfg: harness.ServeConfig, args: argparse.Namespace, dataset: Path) -> dict[str, Any]:
    return {
        str(rate): run_load(
            server, harness.model_path(args), dataset, args.num_prompts, args.latency_output_len, request_rate=rate
        )
        for rate in tqdm(args.request_rates, desc=f"{NAME} {cfg.name}", unit="rate")
    }


def report(results: dict[str, Any], args: argparse.Namespace, png: Path) -> str:
    rows = [
        [rate, name] + [results[name][str(rate)][m] / 1000 for m in METRICS]
        for rate in args.request_rates
        for name in results
    ]
    _plot(results, args.request_rates, png)
    return (
        f"Latency under Poisson load: {args.num_prompts} requests per rate, {args.latency_output_len} tokens "
        f"each, seconds ({args.dtype}, {args.device})\n\n"
        + harness.markdown_table(["req/s", "config", "mean e2e", "p99 e2e", "mean TTFT", "p99 TTFT"], rows)
    )


def _plot(results: dict[str, Any], rates: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in results.items():
        ax.plot(rates, [rows[str(r)]["mean_e2e_latency_ms"] / 1000 for r in rates], "o-", label=f"{name} mean")
        ax.plot(rates, [rows[str(r)]["p99_e2e_latency_ms"] / 1000 for r in rates], "x--", label=f"{name} p99")
    ax.set_xlabel("request rate (req/s, Poisson)")
    ax.set_ylabel("end-to-end latency (s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    import sys

    harness.question_main(sys.modules[__name__], __doc__)
