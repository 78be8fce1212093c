"""Entropy analysis (paper Fig. 2): is a draft token's acceptance predicted by the target's entropy?

Serves EDSD with the opt-in entropy trace ($SGLANG_EDSD_TRACE, see
sglang_edsd/serving/entropy_trace.py), which records for every verify the draft's and the
target's entropy at each draft position and how many drafts the target accepted. Every
position the verify judged counts: accepted (k <= accepted) or rejected (k = accepted + 1);
later positions were never judged. Reported: acceptance rate per draft position and entropy
bin, for the target's entropy and the draft's, as a PNG heat map and JSON, plus the
acceptance rate in the lowest and highest target-entropy quartiles. The trace server is
never one whose speed is measured.

    python benchmarks/bench_entropy.py [--quick] [--entropy-per-task 8] [--entropy-output-len 128]
"""

from __future__ import annotations

import argparse
import os
from itertools import pairwise
from pathlib import Path
from typing import Any

import harness
from tqdm import tqdm

from sglang_edsd.client import ask
from sglang_edsd.drafts import SMOLLM2_EDSD, shipped_draft
from sglang_edsd.serving.entropy_trace import ENV as TRACE_ENV
from sglang_edsd.serving.entropy_trace import read_trace

NAME = "entropy"
EDGES = (0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, float("inf"))  # nats


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--entropy-per-task", type=int, default=None, help="prompts per task (default 8, quick 1)")
    p.add_argument("--entropy-output-len", type=int, default=None, help="tokens per request (default 128, quick 32)")


def set_defaults(args: argparse.Namespace) -> None:
    args.entropy_per_task = args.entropy_per_task or (1 if args.quick else 8)
    args.entropy_output_len = args.entropy_output_len or (32 if args.quick else 128)
    args.trace_file = harness.REPO / "artifacts" / f"entropy-trace-{os.getpid()}.jsonl"
    if args.topk != 1:
        raise SystemExit("error: the entropy trace supports chain drafting only (--topk 1)")


def configs(args: argparse.Namespace) -> list[harness.ServeConfig]:
    """EDSD with the trace on, its own server whatever `--configs` compares (on a GPU without CUDA
    graphs: the trace reads every draft forward in Python)."""
    return [
        harness.ServeConfig(
            "edsd-traced",
            "EDSD",
            str(args.edsd_draft or shipped_draft(SMOLLM2_EDSD)),
            args.steps,
            args.topk,
            args.draft_tokens,
            env={TRACE_ENV: str(args.trace_file)},
            extra_flags=("--disable-cuda-graph",) if args.device == "cuda" else (),
        )
    ]


def prepare(args: argparse.Namespace, workdir: Path) -> list[str]:
    return [r["turns"][0] for r in harness.prompt_records(args, per_task=args.entropy_per_task)]


def measure_on(server: Any, cfg: harness.ServeConfig, args: argparse.Namespace, prompts: list[str]) -> dict[str, Any]:
    before = len(read_trace(args.trace_file)) if args.trace_file.exists() else 0  # the server's own warm-up
    for p in tqdm(prompts, desc=f"{NAME} {cfg.name}", unit="req"):
        ask(server, p, args.entropy_output_len)
    return analyse(read_trace(args.trace_file)[before:])


def analyse(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Judged positions binned by entropy: {signal: {position: [{bin, judged, accepted, rate}]}}."""
    if not records:
        raise ValueError("the entropy trace holds no verify records: was the server started with the trace on?")
    steps = len(records[0]["draft_entropy"])
    judged = [
        (k, r["target_entropy"][k], r["draft_entropy"][k], k < r["accepted"])
        for r in records
        for k in range(min(r["accepted"] + 1, steps))
    ]
    out: dict[str, Any] = {
        "verifies": len(records),
        "judged_positions": len(judged),
        "steps": steps,
        "edges_nats": list(EDGES),
    }
    for signal, idx in (("target", 1), ("draft", 2)):
        table = {}
        for k in range(steps):
            cells = []
            for lo, hi in pairwise(EDGES):
                hits = [j[3] for j in judged if j[0] == k and lo <= j[idx] < hi]
                cells.append(
                    {
                        "bin": [lo, hi],
                        "judged": len(hits),
                        "accepted": sum(hits),
                        "rate": sum(hits) / len(hits) if hits else None,
                    }
                )
            table[str(k + 1)] = cells
        out[signal] = table
    ordered = sorted(judged, key=lambda j: j[1])
    q = max(len(ordered) // 4, 1)
    out["target_quartile_rates"] = {
        "lowest": sum(j[3] for j in ordered[:q]) / q,
        "highest": sum(j[3] for j in ordered[-q:]) / q,
    }
    return out


def report(results: dict[str, Any], args: argparse.Namespace, png: Path) -> str:
    res = results["edsd-traced"]
    _plot(res, png)
    labels = [f"[{lo:g},{hi:g})" for lo, hi in pairwise(EDGES)]
    rows = []
    for k, cells in res["target"].items():
        rows.append([f"d{k}"] + [None if c["rate"] is None else f"{c['rate']:.2f} ({c['judged']})" for c in cells])
    q = res["target_quartile_rates"]
    return (
        f"Acceptance rate (judged positions) by the target's entropy in nats and draft position; "
        f"{res['verifies']} verifies, {res['judged_positions']} judged positions. Lowest-entropy quartile "
        f"accepted {q['lowest']:.2f}, highest {q['highest']:.2f}.\n\n"
        + harness.markdown_table(["position"] + labels, rows)
    )


def _plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    labels = [f"{lo:g}-{hi:g}" for lo, hi in pairwise(EDGES)]
    for ax, signal in zip(axes, ("target", "draft")):
        grid = np.array([[np.nan if c["rate"] is None else c["rate"] for c in cells] for cells in res[signal].values()])
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            n = res[signal][str(i + 1)][j]["judged"]
            if n:
                ax.text(
                    j, i, f"{v:.2f}\n({n})", ha="center", va="center", fontsize=7, color="white" if v < 0.5 else "black"
                )
        ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_yticks(range(grid.shape[0]), [f"d{k}" for k in res[signal]])
        ax.set_xlabel(f"{signal} entropy (nats)")
        ax.set_ylabel("draft position")
        ax.set_title(f"acceptance rate by {signal} entropy")
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.savefig(path, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    import sys

    harness.question_main(sys.modules[__name__], __doc__)
