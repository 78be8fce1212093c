"""`sglang-edsd calibrate-stop`: write the entropy-stop threshold into a draft folder
(`entropy_stop_calibrate` does the work; this module keeps the CLI's wiring free of torch)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sglang_edsd.files import write_text_atomic

# SmolLM2 on the 2-core CPU at batch 1 (benchmarks/results/cost-model-smollm2-20261204.json), where
# the stop cuts a round's chain to its kept proposals: a depth-1 round is the verify's 51.2 ms +
# 3.86 ms per row (2 rows), draft extend 6.0 and the rest 10.5; each proposal kept past d_1 adds a
# draft step (3.6 ms) and a verify row (3.86 ms).
FIXED_MS = 51.2 + 3.86 * 2 + 6.0 + 10.5
STEP_MS = 3.6 + 3.86


def add_calibrate_stop_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--draft", required=True, help="the served draft folder; the threshold is written into it")
    p.add_argument("--capture", required=True, help="capture of held-out text holding the draft's layers")
    p.add_argument("--steps", type=int, default=4, help="the served chain depth S (default 4)")
    p.add_argument("--fixed-ms", type=float, default=FIXED_MS, help="cost of a round that keeps d_1 only (ms)")
    p.add_argument(
        "--step-ms",
        type=float,
        default=STEP_MS,
        help="cost of each proposal kept past d_1: a draft step and a verify row (ms)",
    )
    p.add_argument("--max-samples", type=int)
    p.add_argument("--report", help="also write the full report JSON (and a .png plot) here")
    p.add_argument("--dry-run", action="store_true", help="report only; leave the draft folder as it is")
    p.add_argument("--no-progress", action="store_true")


def calibrate_stop_main(args: argparse.Namespace) -> None:
    from sglang_edsd.entropy_stop_calibrate import calibrate_stop, plot_acceptance, write_sidecar

    report = calibrate_stop(
        args.draft,
        args.capture,
        steps=args.steps,
        fixed_ms=args.fixed_ms,
        step_ms=args.step_ms,
        max_samples=args.max_samples,
        progress=not args.no_progress,
    )
    best, full = report["best"], report["full_chain"]
    print(
        f"entropy stop threshold {best['threshold']:.3f} nats over {report['positions']} held-out positions: "
        f"{best['tokens_per_round']:.3f} tokens and {best['draft_steps']:.2f} draft steps per round against "
        f"{full['tokens_per_round']:.3f} and {full['draft_steps']:.0f} for the full chain; predicted "
        f"{best['speedup_vs_full_chain']:.3f}x the full chain at batch 1"
    )
    if args.report:
        out = Path(args.report)
        write_text_atomic(out, json.dumps(report, indent=2) + "\n")
        plot_acceptance(report, out.with_suffix(".png"))
        print(f"wrote {out} and {out.with_suffix('.png')}")
    if not args.dry_run:
        print(f"wrote {write_sidecar(report, Path(args.draft))} (serve with SGLANG_EDSD_ENTROPY_STOP=draft)")
