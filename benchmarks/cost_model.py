"""Cost model of a speculative round on this CPU, from a phase profile and a paired speed run.

round(depth) = verify(depth + 1 rows) + draft_extend + (depth - 1) * draft_step + rest, every part
measured by `bench_cpu_path.py --phase-times` (a chain of depth d runs one draft extend and d - 1
draft decode forwards). verify(rows) is linear in rows between the measured chains; the rest
(accept, bookkeeping, scheduler) is their mean. Predicted speed over no speculation is
tau * step / round with the plain step from the same profile and tau from the paired run
(`bench_cpu_path.py`), checked against that run's measured median ratio. Break-even tau is
round / step: the accept length a shape needs before it pays. Depths that were not profiled
are extrapolations and are marked so.

    python benchmarks/cost_model.py --phases benchmarks/results/cpu-phases-smollm2-20261204.json \\
        --speed benchmarks/results/cpu-path-smollm2-20261204.json \\
        --out benchmarks/results/cost-model-smollm2-20261204.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import harness
from harness import markdown_table


def chain_parts(phases: dict[str, Any]) -> tuple[float, dict[int, dict[str, float]]]:
    """The plain step's ms and, per profiled chain depth, its parts in ms per round."""
    step = phases["windows"]["none"][-1]["ms_per_unit"]["forward"]
    parts = {}
    for config, windows in phases["windows"].items():
        if not config.startswith("edsd-c"):
            continue
        depth, ms = int(config.removeprefix("edsd-c")), windows[-1]["ms_per_unit"]
        draft_steps = ms.get("draft_steps", 0.0)
        parts[depth] = {
            "round": ms["round"],
            "verify": ms["verify"],
            "draft_extend": ms["draft_extend"],
            "draft_step": draft_steps / (depth - 1) if depth > 1 else 0.0,
            "rest": ms["round"] - ms["verify"] - ms["draft_extend"] - draft_steps,
        }
    if len(parts) < 2:
        raise SystemExit("error: the cost model needs phase profiles of at least two chain depths")
    return step, parts


def fit(parts: dict[int, dict[str, float]]) -> dict[str, float]:
    """verify = a + b * rows (least squares over the profiled depths); the other parts' means."""
    rows = [d + 1 for d in parts]
    verify = [p["verify"] for p in parts.values()]
    n, mean_r, mean_v = len(rows), sum(rows) / len(rows), sum(verify) / len(verify)
    slope = sum((r - mean_r) * (v - mean_v) for r, v in zip(rows, verify)) / sum((r - mean_r) ** 2 for r in rows)
    steps = [p["draft_step"] for d, p in parts.items() if d > 1]
    return {
        "verify_at_0_rows": mean_v - slope * mean_r,
        "verify_per_row": slope,
        "draft_extend": sum(p["draft_extend"] for p in parts.values()) / n,
        "draft_step": sum(steps) / len(steps),
        "rest": sum(p["rest"] for p in parts.values()) / n,
    }


def predict_round(model: dict[str, float], depth: float) -> float:
    """A chain's round; linear in depth, so a mean depth gives the mean round."""
    verify = model["verify_at_0_rows"] + model["verify_per_row"] * (depth + 1)
    return verify + model["draft_extend"] + (depth - 1) * model["draft_step"] + model["rest"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--phases", type=Path, required=True, help="bench_cpu_path.py --phase-times JSON")
    p.add_argument("--speed", type=Path, required=True, help="bench_cpu_path.py paired-run JSON")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    phases, speed = json.loads(args.phases.read_text()), json.loads(args.speed.read_text())
    step, parts = chain_parts(phases)
    model = fit(parts)
    rows, shapes = [], {}
    for depth in range(1, 6):
        config = f"edsd-c{depth}"
        measured = speed["summary"].get(config)
        round_ms = predict_round(model, depth)
        shape: dict[str, Any] = {
            "depth": depth,
            "profiled": depth in parts,
            "round_ms": round_ms,
            "break_even_tau": round_ms / step,
        }
        if measured is not None and "mean_accept_length" in measured:
            tau = measured["mean_accept_length"]
            shape |= {"tau": tau, "predicted_vs_none": tau * step / round_ms}
            shape["measured_vs_none"] = measured["vs_none"]["median"]
            shape["error"] = shape["predicted_vs_none"] / shape["measured_vs_none"] - 1
        shapes[config] = shape
        rows.append(
            [
                f"chain {depth}" + ("" if depth in parts else " (extrapolated)"),
                round_ms,
                shape["break_even_tau"],
                shape.get("tau"),
                shape.get("predicted_vs_none"),
                shape.get("measured_vs_none"),
                None if "error" not in shape else f"{shape['error']:+.1%}",
            ]
        )
    header = ["shape", "round ms", "break-even tau", "tau", "predicted vs none", "measured vs none", "error"]
    table = markdown_table(header, rows)
    parts_line = ", ".join(f"{k} {v:.2f}" for k, v in model.items())
    text = (
        f"# {args.out.stem}\n\n`{harness.provenance(args.out.stem)['command']}`\n\n"
        f"Plain decode step {step:.2f} ms. Model parts (ms): {parts_line}.\n\n{table}\n"
    )
    harness.write_json(
        args.out,
        {**harness.provenance(args.out.stem), "step_ms": step, "parts": parts, "model": model, "shapes": shapes},
    )
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
