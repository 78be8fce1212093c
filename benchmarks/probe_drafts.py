"""Short online-training probes at an equal token budget, scored on held-out data: which target
layers, which initialisation and which answers (original or regenerated) a SmolLM2 draft learns
best from. Each probe is a full `sglang-edsd train --online` run, so probes compare exactly what
the shipped run would do, only shorter.

    python benchmarks/probe_drafts.py layers --data TRAIN_TOKENS --heldout HELDOUT_TOKENS \
        --edselect EDSELECT_JSON [--budget 100000]
    python benchmarks/probe_drafts.py init --data ... --heldout ... [--init-layers 29]
    python benchmarks/probe_drafts.py data --data ORIGINAL_TOKENS --regen REGEN_TOKENS --heldout ...

`layers` trains EDSD on candidate pairs (EDSelect's pick, the pair the opposite curvature reading
gives, deep pairs) and single-layer `fc` drafts, and reports the Spearman correlation of each
EDSelect metric with single-layer held-out agreement. Probes resume and are skipped once done;
`layers --reuse PREVIOUS_JSON` reads back the probes a committed run with the same settings scored,
so a lost work folder does not mean training them again.
Writes benchmarks/results/smollm2-online/probes-<group>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness
from harness import markdown_table

from sglang_edsd.assets import smollm2_path
from sglang_edsd.edtrain import recipe
from sglang_edsd.edtrain.sources import OnlineData
from sglang_edsd.edtrain.trainer import train

OUT = harness.RESULTS / "smollm2-online"
METRICS = ("curvature", "lidar", "prompt_entropy", "dataset_entropy")
SETTINGS = ("group", "data", "heldout", "target", "budget", "batch_tokens", "lr", "draft_vocab_size")


def reused_probes(path: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """A committed `layers` result's held-out scores by probe name, refused unless it was trained
    with the same settings (a probe from another budget or lr would not compare)."""
    prev = json.loads(path.read_text())
    differ = [k for k in SETTINGS if prev["args"].get(k) != getattr(args, k)]
    if differ:
        raise SystemExit(f"--reuse {path}: trained with other settings ({', '.join(differ)}); not comparable")
    probes = [*prev["results"]["pairs"].values(), *prev["results"]["singles"].values()]
    return {
        probe_name(p["layer_ids"]): {k: v for k, v in p.items() if k not in ("layer_ids", *METRICS)} for p in probes
    }


def probe_name(layer_ids: Sequence[int]) -> str:
    """A `layers` probe's run folder name: `pair-A-B` or `single-I`."""
    return ("pair-" if len(layer_ids) == 2 else "single-") + "-".join(map(str, layer_ids))


def run_probe(name: str, overrides: dict[str, Any], data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or resume, or read back) one probe; its held-out score at the end of the budget."""
    if name in args.reused:
        return args.reused[name]
    run = Path(args.work) / name
    if (run / "summary.json").exists():
        return json.loads((run / "summary.json").read_text())["heldout"]
    cfg = recipe(
        overrides.pop("recipe", "edsd"),
        s_max=4,
        epochs=3,
        gamma=4.0,
        lr=args.lr,
        seed=0,
        token_budget=args.budget,
        batch_tokens=args.batch_tokens,
        max_length=1024,
        draft_vocab_size=args.draft_vocab_size,
        checkpoint_every=20,
        **overrides,
    )
    target = Path(args.target)
    out = train(
        cfg,
        OnlineData(data, target),
        run,
        heldout=OnlineData(Path(args.heldout), target),
        export=False,
        progress=not args.no_progress,
    )
    return out["heldout"]


def _row(name: str, h: dict[str, Any]) -> list[Any]:
    return [
        name,
        *[round(a, 4) for a in h["agreement_per_step"]],
        round(h["tau_proxy"], 4),
        round(h["vocab_coverage"], 4),
    ]


def spearman(xs: list[float], ys: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys).statistic)


def layers(args: argparse.Namespace) -> dict[str, Any]:
    sel = json.loads(Path(args.edselect).read_text())
    by_id = {row["sglang_id"]: row for row in sel["layers"]}
    low_curv = min(by_id, key=lambda i: by_id[i]["curvature"])
    pairs = {
        "edselect": tuple(sel["selected_layer_ids"]),
        "opposite-curvature": tuple(sorted({sel["lidar_layer"], low_curv})),
        **{f"deep-{a}-{b}": (a, b) for a, b in args.deep_pairs},
    }
    results: dict[str, Any] = {"pairs": {}, "singles": {}}
    for name, ids in pairs.items():
        results["pairs"][name] = {
            "layer_ids": list(ids),
            **run_probe(probe_name(ids), {"layer_ids": ids}, Path(args.data), args),
        }
    for i in args.singles:
        results["singles"][str(i)] = {
            "layer_ids": [i],
            **{m: by_id[i][m] for m in METRICS},
            **run_probe(probe_name((i,)), {"layer_ids": (i,), "input_module": "fc"}, Path(args.data), args),
        }
    if len(results["singles"]) >= 3:  # a rank correlation needs a few points
        step1 = [s["agreement_per_step"][0] for s in results["singles"].values()]
        results["spearman_vs_single_layer_step1_agreement"] = {
            m: spearman([s[m] for s in results["singles"].values()], step1) for m in METRICS
        }
    return results


def init(args: argparse.Namespace) -> dict[str, Any]:
    ids = tuple(args.layer_ids)
    out = {
        "random": {
            "layer_ids": list(ids),
            **run_probe(probe_name(ids), {"layer_ids": ids}, Path(args.data), args),
        }
    }
    for k in args.init_layers:
        out[f"target-layer-{k}"] = {
            "layer_ids": list(ids),
            **run_probe(f"pair-{ids[0]}-{ids[1]}-init{k}", {"layer_ids": ids, "init_layer": k}, Path(args.data), args),
        }
    return out


def data(args: argparse.Namespace) -> dict[str, Any]:
    ids = tuple(args.layer_ids)
    return {
        name: {
            "layer_ids": list(ids),
            "data": str(path),
            **run_probe(f"data-{name}-{ids[0]}-{ids[1]}", {"layer_ids": ids}, path, args),
        }
        for name, path in (("original", Path(args.data)), ("regenerated", Path(args.regen)))
    }


def _flat(group: str, results: dict[str, Any]) -> dict[str, Any]:
    """Probe name -> its result (the layer group nests pairs and single layers)."""
    if group != "layers":
        return results
    return {**results["pairs"], **{f"fc layer {k}": v for k, v in results["singles"].items()}}


def _plot(group: str, results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probes = _flat(group, results)
    names = list(probes)
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(names) + 1.5))
    steps = len(next(iter(probes.values()))["agreement_per_step"])
    for k in range(steps):
        ax.barh(
            [y + k * 0.8 / steps for y in range(len(names))],
            [probes[n]["agreement_per_step"][k] for n in names],
            height=0.8 / steps,
            label=f"step {k + 1}",
        )
    ax.set_yticks([y + 0.4 - 0.4 / steps for y in range(len(names))], names, fontsize=8)
    ax.set(xlabel="held-out top-1 agreement with the target", title=f"online probes: {group}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("group", choices=["layers", "init", "data"])
    ap.add_argument("--data", required=True, help="training token JSONL (original answers for `data`)")
    ap.add_argument("--heldout", required=True, help="held-out token JSONL")
    ap.add_argument("--regen", help="`data`: the same conversations re-answered by the target, as tokens")
    ap.add_argument("--edselect", help="`layers`: EDSelect result JSON")
    ap.add_argument(
        "--deep-pairs",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        nargs="+",
        default=[(14, 26), (19, 27), (24, 28)],
        metavar="A,B",
    )
    ap.add_argument("--singles", type=int, nargs="*", default=[0, 4, 9, 14, 19, 24, 28], help="none: pairs only")
    ap.add_argument("--layer-ids", type=int, nargs=2, default=[14, 26], help="`init`/`data`: the pair trained")
    ap.add_argument("--init-layers", type=int, nargs="+", default=[29])
    ap.add_argument("--budget", type=int, default=100_000, help="training tokens per probe")
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--draft-vocab-size", type=int, default=8192)
    ap.add_argument("--target", default=None, help="target folder (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--work", default=str(Path.home() / ".cache/sglang_edsd/runs/online/probes"))
    ap.add_argument("--reuse", type=Path, help="`layers`: a committed probes-layers.json to read scores back from")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    args.target = args.target or str(smollm2_path())
    if args.reuse and args.group != "layers":
        ap.error("--reuse reads back `layers` probes only")
    args.reused = reused_probes(args.reuse, args) if args.reuse else {}
    results = {"layers": layers, "init": init, "data": data}[args.group](args)
    OUT.mkdir(parents=True, exist_ok=True)
    stem = OUT / f"probes-{args.group}"
    header = ["probe", "step 1", "step 2", "step 3", "step 4", "tau proxy", "vocab coverage"]
    probes = _flat(args.group, results)
    table = markdown_table(header, [_row(f"{n} {v['layer_ids']}", v) for n, v in probes.items()])
    if "spearman_vs_single_layer_step1_agreement" in results:
        rho = results["spearman_vs_single_layer_step1_agreement"]
        table += "\n\nSpearman correlation with single-layer step-1 held-out agreement: " + ", ".join(
            f"{m} {r:+.3f}" for m, r in rho.items()
        )
    harness.write_json(
        stem.with_suffix(".json"),
        {
            **harness.provenance(f"probes-{args.group}"),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "reused"},
            "read_back": sorted(args.reused),
            "results": results,
        },
    )
    read_back = f"Read back from {args.reuse} (same settings): {', '.join(sorted(args.reused))}\n\n" * bool(args.reuse)
    stem.with_suffix(".md").write_text(
        f"# Online probes: {args.group}\n\nCommand: `python {' '.join(sys.argv)}`\n\n"
        f"{args.budget} training tokens per probe, held out: {args.heldout}\n\n{read_back}{table}\n"
    )
    _plot(args.group, results, stem.with_suffix(".png"))
    print(table)


if __name__ == "__main__":
    main()
