"""How much an entropy stop can gain over static depths on this CPU, from its calibration and the round cost model.

The entropy stop (docs/serving.md) skips draft steps after every request has stopped and, where
the draft runs eagerly, cuts the round's chain to the deepest kept proposal: at batch 1 a round
costs round(kept), a static chain of that depth ("rows cut", the stop as built). A stop whose
verify keeps the full chain's rows (as a fixed-shape, CUDA-graph verify would, and as the stop did
before its chain cut) costs round(S) less the draft steps it skipped ("rows fixed"). For every
threshold `sglang-edsd calibrate-stop` scored (held-out tokens per round and draft steps run),
this prices both with `cost_model.py`'s fitted parts and compares them with static depth 1 (the
threshold 0: d_1 only) and depth S (no stop), the shapes the calibration scores exactly.

    python benchmarks/stop_bound.py --cost-model benchmarks/results/cost-model-smollm2-20261204.json \\
        --calibration benchmarks/results/entropy-stop-calibration-smollm2.json \\
            benchmarks/results/entropy-stop-calibration-smollm2-eagle3.json \\
        --out benchmarks/results/entropy-stop-bound-smollm2.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import harness
from cost_model import predict_round
from harness import markdown_table


def round_ms(model: dict[str, float], steps: int, draft_steps: float, rows_cut: bool) -> float:
    """Mean round at batch 1 of a depth-`steps` chain that runs `draft_steps` draft steps on average."""
    if rows_cut:  # the chain cut: a static chain of depth draft_steps + 1 (linear in depth)
        return predict_round(model, draft_steps + 1)
    return predict_round(model, steps) - (steps - 1 - draft_steps) * model["draft_step"]


def bound(calibration: dict[str, Any], model: dict[str, float]) -> dict[str, Any]:
    """Tokens per ms of each candidate threshold under both verify models, relative to depth 1 and depth S."""
    steps = calibration["steps"]
    by_threshold = {c["threshold"]: c for c in calibration["candidates"]}
    if 0.0 not in by_threshold or float("inf") not in by_threshold:
        raise SystemExit("error: the calibration has no threshold 0 or inf candidate: rerun calibrate-stop")
    depth1 = by_threshold[0.0]["tokens_per_round"] / predict_round(model, 1)
    depth_s = by_threshold[float("inf")]["tokens_per_round"] / predict_round(model, steps)
    rows = []
    for c in calibration["candidates"]:
        row = {"threshold": c["threshold"], "tokens_per_round": c["tokens_per_round"], "draft_steps": c["draft_steps"]}
        for name, cut in (("rows_fixed", False), ("rows_cut", True)):
            speed = c["tokens_per_round"] / round_ms(model, steps, c["draft_steps"], cut)
            row[name] = {"vs_depth_1": speed / depth1, "vs_full_chain": speed / depth_s}
        rows.append(row)
    best = {name: max(rows, key=lambda r: r[name]["vs_depth_1"]) for name in ("rows_fixed", "rows_cut")}
    return {
        "draft": calibration["draft"],
        "steps": steps,
        "full_chain_vs_depth_1": depth_s / depth1,
        "best": best,
        "candidates": rows,
    }


def plot(results: list[dict[str, Any]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, r in enumerate(results):
        finite = [c for c in r["candidates"] if c["threshold"] != float("inf")]
        x = [c["threshold"] for c in finite]
        name = Path(r["draft"]).name
        fixed, cut = (f"{name}: verify rows fixed (fixed shape)", f"{name}: chain cut (as built, batch 1)")
        ax.plot(x, [c["rows_fixed"]["vs_depth_1"] for c in finite], color=f"C{i}", label=fixed)
        ax.plot(x, [c["rows_cut"]["vs_depth_1"] for c in finite], "--", color=f"C{i}", label=cut)
    ax.axhline(1.0, color="gray", lw=1)
    ax.axhline(1.1, color="gray", lw=1, ls=":")
    ax.set_xlabel("entropy-stop threshold (nats)")
    ax.set_ylabel("predicted tokens/s vs static depth 1")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cost-model", type=Path, required=True, help="cost_model.py JSON")
    p.add_argument("--calibration", type=Path, nargs="+", required=True, help="calibrate-stop --report JSONs")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    model = json.loads(args.cost_model.read_text())["model"]
    results = [bound(json.loads(f.read_text()), model) for f in args.calibration]
    table = markdown_table(
        ["draft", "full chain vs depth 1", "best stop, rows fixed", "vs depth 1", "best stop, chain cut", "vs depth 1"],
        [
            [
                Path(r["draft"]).name,
                r["full_chain_vs_depth_1"],
                f"{r['best']['rows_fixed']['threshold']:.2f} nats",
                r["best"]["rows_fixed"]["rows_fixed"]["vs_depth_1"],
                f"{r['best']['rows_cut']['threshold']:.2f} nats",
                r["best"]["rows_cut"]["rows_cut"]["vs_depth_1"],
            ]
            for r in results
        ],
    )
    meta = harness.provenance(args.out.stem)
    harness.write_json(args.out, {**meta, "model": model, "drafts": results})
    plot(results, args.out.with_suffix(".png"))
    text = f"# {args.out.stem}\n\n`{meta['command']}`\n\n{table}\n"
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
