"""Throughput of the drafter toolkit on this machine: capture tokens/s and EDTrain tokens/s.

    python benchmarks/bench_toolkit.py [--samples 16] [--max-length 2048] [--draft-vocab-size 8192]

Uses SmolLM2-135M-Instruct and the first N ShareGPT conversations (original answers: the
cost does not depend on who wrote them). Capture stores EDSD's two layers plus EAGLE-3's
three; training runs one epoch at n=1 and one at n=S_max=7 (the two ends of Step-n_t),
each in its own run folder. Prints a table and writes benchmarks/results/toolkit-<host>-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from itertools import islice
from pathlib import Path

import torch

from sglang_edsd.assets import sharegpt_jsonl, smollm2_path
from sglang_edsd.capture import bytes_per_token, capture
from sglang_edsd.data import build_token_dataset, load_conversations
from sglang_edsd.edtrain import recipe
from sglang_edsd.edtrain.trainer import train

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--draft-vocab-size", type=int, default=8192)
    ap.add_argument("--layer-ids", type=int, nargs=2, default=[13, 26], help="EDSD's two layers (SGLang ids)")
    ap.add_argument("--work", default="artifacts/bench-toolkit")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    target = smollm2_path()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tokens = work / "tokens.jsonl"
    convs = [c for c in islice(load_conversations(sharegpt_jsonl()), 4 * args.samples)
             if any(m["role"] == "assistant" for m in c.messages)][: args.samples]
    stats = build_token_dataset(convs, AutoTokenizer.from_pretrained(target), tokens, max_length=args.max_length,
                                skip_invalid=True)
    layers = sorted({*args.layer_ids, 1, 30 // 2 - 1, 30 - 4})
    t0 = time.perf_counter()
    cap = capture(target, tokens, work / "capture", layers, max_length=args.max_length)
    cap_s = time.perf_counter() - t0
    rows = {"capture": {"tokens": cap["tokens"], "seconds": round(cap_s, 1),
                        "tokens_per_s": round(cap["tokens"] / cap_s, 1), "layers": layers,
                        "bytes_per_token": bytes_per_token(576, 2, "bfloat16"),
                        "eagle3_bytes_per_token": bytes_per_token(576, 3, "bfloat16"),
                        "disk_bytes_per_token_all_layers": round(cap["disk_bytes_per_token"], 1)}}
    for n in (1, 7):
        cfg = recipe("edsd", layer_ids=tuple(args.layer_ids), epochs=1, s_max=n, mask_p=False,
                     draft_vocab_size=args.draft_vocab_size, max_length=args.max_length, checkpoint_every=0)
        run = work / f"train-n{n}"
        subprocess.run(["rm", "-rf", str(run)], check=True)
        h = train(cfg, work / "capture", run, export=False)["history"][0]
        rows[f"train_n{n}"] = {"tokens": h["tokens"], "seconds": h["seconds"], "tokens_per_s": h["tokens_per_s"],
                               "draft_vocab_size": args.draft_vocab_size}
    print("\n| stage | tokens | seconds | tokens/s |\n| --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['tokens']} | {r['seconds']} | {r['tokens_per_s']} |")
    c = rows["capture"]
    print(f"\ncapture bytes/token: {c['bytes_per_token']} (EDSD, 2 layers) vs {c['eagle3_bytes_per_token']} "
          f"(EAGLE-3, 3 layers): {1 - c['bytes_per_token'] / c['eagle3_bytes_per_token']:.1%} less")
    out = RESULTS / f"toolkit-{platform.node()}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    out.write_text(json.dumps({"machine": {"cpus": torch.get_num_threads(), "platform": platform.platform()},
                               "git_commit": git, "target": str(target), "data": {k: v if isinstance(v, int) else len(v) for k, v in stats.items()}, "results": rows, "args": vars(args)}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
