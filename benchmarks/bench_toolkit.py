"""Drafter-toolkit throughput on this machine: today's capture + offline training pipeline
against online training, end to end, at n = 1 and n = 4 training-time-test steps, on the same
data in one run.

    python benchmarks/bench_toolkit.py [--samples 16] [--max-length 2048] [--draft-vocab-size 4096]

Uses SmolLM2-135M-Instruct and the first N ShareGPT conversations (original answers: the cost
does not depend on who wrote them). Rows:
- offline: `capture` (float32 target, bf16 storage, EDSD's two layers) then one epoch of
  batch-1 float32 training; end to end = tokens / (capture seconds + training seconds).
- online: one epoch with the target in the loop, packed micro-batches of --batch-tokens,
  bf16 autocast and a bf16 target (`--precision bf16`); and the same in float32, to show what
  packing alone buys.
Each run sits alone on the cores. Writes benchmarks/results/toolkit-<time>.{json,md,png} with
commit, SGLang version, hardware and command.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any

import harness
from harness import markdown_table

from sglang_edsd.assets import sharegpt_jsonl, smollm2_path
from sglang_edsd.capture import bytes_per_token, capture
from sglang_edsd.data import build_token_dataset, load_conversations
from sglang_edsd.edtrain import recipe
from sglang_edsd.edtrain.sources import OnlineData
from sglang_edsd.edtrain.trainer import train

D, LAYERS = 576, 30  # SmolLM2-135M


def _train_row(cfg_kw: dict[str, Any], data: Any, run: Path) -> dict[str, Any]:
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    out = train(recipe("edsd", **cfg_kw), data, run, export=False)
    wall = time.perf_counter() - t0
    h = out["history"][0]
    return {
        "tokens": h["tokens"],
        "seconds": round(wall, 1),
        "tokens_per_s": round(h["tokens"] / wall, 1),
        "loop_seconds": h["seconds"],
        "num_steps": h["num_steps"],
    }


def _plot(rows: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in rows if k != "capture"]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.barh(
        names, [rows[k]["tokens_per_s"] for k in names], color=["#999" if "offline" in k else "#2a7" for k in names]
    )
    for y, k in enumerate(names):
        ax.text(rows[k]["tokens_per_s"], y, f" {rows[k]['tokens_per_s']:.0f}", va="center", fontsize=8)
    ax.set(
        xlabel="end-to-end training tokens/s (target features + draft training)",
        title="SmolLM2-135M drafter training on this machine",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--draft-vocab-size", type=int, default=4096)
    ap.add_argument("--batch-tokens", type=int, default=4096, help="online micro-batch size in tokens")
    ap.add_argument("--layer-ids", type=int, nargs=2, default=[14, 26], help="EDSD's two layers (SGLang ids)")
    ap.add_argument("--work", default="artifacts/bench-toolkit")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    target = smollm2_path()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tokens = work / "tokens.jsonl"
    convs = [
        c
        for c in islice(load_conversations(sharegpt_jsonl()), 4 * args.samples)
        if any(m["role"] == "assistant" for m in c.messages)
    ][: args.samples]
    stats = build_token_dataset(
        convs, AutoTokenizer.from_pretrained(target), tokens, max_length=args.max_length, skip_invalid=True
    )
    shutil.rmtree(work / "capture", ignore_errors=True)
    t0 = time.perf_counter()
    cap = capture(target, tokens, work / "capture", args.layer_ids, max_length=args.max_length)
    cap_s = time.perf_counter() - t0
    rows: dict[str, dict[str, Any]] = {
        "capture": {
            "tokens": cap["tokens"],
            "seconds": round(cap_s, 1),
            "tokens_per_s": round(cap["tokens"] / cap_s, 1),
            "bytes_per_token": bytes_per_token(D, 2, "bfloat16"),
            "eagle3_bytes_per_token": bytes_per_token(D, 3, "bfloat16"),
            "disk_bytes_per_token": round(cap["disk_bytes_per_token"], 1),
        }
    }
    base = {
        "layer_ids": tuple(args.layer_ids),
        "epochs": 1,
        "mask_p": False,
        "checkpoint_every": 0,
        "draft_vocab_size": args.draft_vocab_size,
        "max_length": args.max_length,
    }
    online = OnlineData(tokens, target)
    for n in (1, 4):
        off = _train_row({**base, "s_max": n, "precision": "fp32"}, work / "capture", work / f"offline-n{n}")
        e2e = off["tokens"] / (cap_s + off["seconds"])
        rows[f"offline train n={n}"] = off
        rows[f"offline capture + train n={n}"] = {
            "tokens": off["tokens"],
            "seconds": round(cap_s + off["seconds"], 1),
            "tokens_per_s": round(e2e, 1),
        }
        rows[f"online packed bf16 n={n}"] = _train_row(
            {**base, "s_max": n, "precision": "bf16", "batch_tokens": args.batch_tokens}, online, work / f"online-n{n}"
        )
    rows["online packed fp32 n=4"] = _train_row(
        {**base, "s_max": 4, "precision": "fp32", "batch_tokens": args.batch_tokens}, online, work / "online-fp32-n4"
    )
    ratio = {
        f"n={n}": round(
            rows[f"online packed bf16 n={n}"]["tokens_per_s"] / rows[f"offline capture + train n={n}"]["tokens_per_s"],
            2,
        )
        for n in (1, 4)
    }
    table = markdown_table(
        ["stage", "tokens", "seconds", "tokens/s"],
        [[k, r["tokens"], r["seconds"], r["tokens_per_s"]] for k, r in rows.items()],
    )
    text = (
        f"{table}\n\nonline (packed, bf16) over capture + offline training, end to end: {ratio}\n"
        f"capture bytes/token: {rows['capture']['bytes_per_token']} (EDSD, 2 layers) vs "
        f"{rows['capture']['eagle3_bytes_per_token']} (EAGLE-3, 3 layers); online writes none\n"
    )
    print(text)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = harness.RESULTS / f"toolkit-{stamp}"
    harness.write_json(
        out.with_suffix(".json"),
        {
            **harness.provenance("toolkit"),
            "target": str(target),
            "data": {k: v if isinstance(v, int) else len(v) for k, v in stats.items()},
            "results": rows,
            "online_over_offline_end_to_end": ratio,
            "args": vars(args),
        },
    )
    out.with_suffix(".md").write_text(
        f"# Toolkit throughput ({stamp})\n\nCommand: `python {' '.join(sys.argv)}`\n\n{text}"
    )
    _plot(rows, out.with_suffix(".png"))
    print(f"wrote {out}.{{json,md,png}}")


if __name__ == "__main__":
    main()
