"""`sglang-edsd easd-calibrate`: write an EASD configuration for a draft from a calibration capture."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sglang_edsd.easd.rule import ENV


def add_calibrate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--draft", required=True, help="the served draft folder (EDSD or EAGLE-3 format)")
    p.add_argument("--capture", required=True, help="capture of calibration text holding the draft's layers")
    p.add_argument(
        "--percentile",
        type=float,
        default=80.0,
        help="entropy thresholds: this percentile of each model's entropies (default 80)",
    )
    p.add_argument("--top-n", type=int, default=5)
    p.add_argument("--min-overlap", type=float, default=0.6, help="fraction of top-n ids both must share")
    p.add_argument("--steps", type=int, default=4, help="draft steps to unroll (the served chain depth)")
    p.add_argument("--max-samples", type=int)
    p.add_argument("--out", required=True, help="JSON to write; serve with SGLANG_EDSD_EASD=<this file>")
    p.add_argument("--no-progress", action="store_true")


def calibrate_main(args: argparse.Namespace) -> None:
    from sglang_edsd.easd.calibrate import calibrate

    report = calibrate(
        args.draft,
        args.capture,
        percentile=args.percentile,
        top_n=args.top_n,
        min_overlap=args.min_overlap,
        steps=args.steps,
        max_samples=args.max_samples,
        progress=not args.no_progress,
    )
    out = Path(args.out)
    out.write_text(json.dumps(report["config"], indent=2) + "\n")
    out.with_suffix(".report.json").write_text(json.dumps(report, indent=2) + "\n")
    cfg = report["config"]
    print(
        f"EASD thresholds ({args.percentile:g}th percentile over {report['samples']} samples): draft entropy "
        f"{cfg['draft_entropy']:.3f}, target entropy {cfg['target_entropy']:.3f} nats; rule fires at "
        f"{[round(r, 3) for r in report['fire_rate_per_step']]} of positions per draft step"
    )
    print(f"wrote {out} (serve with {ENV}={out}) and {out.with_suffix('.report.json')}")
