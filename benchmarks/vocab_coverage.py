"""Draft vocabulary size: held-out coverage of the target's top-1 against the lm_head's cost.

An EAGLE-3-style draft predicts only its K most frequent training tokens, so the share of
held-out positions whose target top-1 lies in those K ids caps its agreement at every step.
Coverage is counted on the training data's loss-bearing tokens (cut at --max-length, as the
trainer counts them) and scored on held-out positions through the target (float32, as served);
the cost is computed, not timed: lm_head weights K x d, which every draft decode step reads.

    python benchmarks/vocab_coverage.py --data train-tokens.jsonl --heldout heldout-tokens.jsonl \
        --draft sglang_edsd/drafts/smollm2-135m-instruct-edsd \
        --out benchmarks/results/smollm2-online/vocab-coverage.json   # also .md and .png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import harness
import torch
from tqdm import tqdm

from sglang_edsd.assets import smollm2_path
from sglang_edsd.capture.writer import load_target_model, run_target
from sglang_edsd.data.chat import read_token_dataset
from sglang_edsd.data.vocab import count_loss_tokens, select_draft_vocab, vocab_coverage
from sglang_edsd.draft_config import TargetInfo
from sglang_edsd.edtrain.export import read_draft

SIZES = (1024, 2048, 4096, 8192, 12288, 16384, 24576, 32768)
LM_HEAD = "lm_head.weight"


def truncated(path: Path, max_length: int):
    for s in read_token_dataset(path):
        yield {**s, "input_ids": s["input_ids"][:max_length], "loss_mask": s["loss_mask"][:max_length]}


def heldout_top1_counts(path: Path, target: Path, max_length: int, vocab_size: int) -> torch.Tensor:
    """Counts of the target's top-1 at scored held-out positions (the next token is an answer token)."""
    model = load_target_model(target, "cpu", "float32")
    samples = list(truncated(path, max_length))
    counts = torch.zeros(vocab_size, dtype=torch.int64)
    for s in tqdm(samples, desc="held-out top-1", unit="sample"):
        top1 = run_target(model, s["input_ids"], [], torch.float32)["target_top1"].long()
        scored = torch.tensor(s["loss_mask"][1:], dtype=torch.bool)
        picked = top1[:-1][scored]
        counts.index_add_(0, picked, torch.ones_like(picked))
    return counts


def draft_weights(draft: Path) -> tuple[int, int, torch.Tensor]:
    """(weights outside the lm_head, lm_head width d, draft-to-target ids) of an exported draft."""
    _, weights, d2t = read_draft(draft)
    if LM_HEAD not in weights:
        raise SystemExit(f"{draft}/model.safetensors has no {LM_HEAD!r}")
    other = sum(w.numel() for name, w in weights.items() if name != LM_HEAD)
    return other, int(weights[LM_HEAD].shape[1]), d2t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="training tokens (sglang-edsd prepare JSONL)")
    parser.add_argument("--heldout", type=Path, required=True, help="held-out tokens (sglang-edsd prepare JSONL)")
    parser.add_argument("--draft", type=Path, required=True, help="an exported draft: its d2t and weight shapes")
    parser.add_argument("--target", type=Path, help="target folder (default: sglang-edsd fetch-smollm2)")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--out", type=Path, required=True, help="result JSON (.md and .png beside it)")
    args = parser.parse_args()
    target = args.target or smollm2_path()
    vocab_size = TargetInfo.from_path(target).vocab_size
    if bad := [k for k in args.sizes if not 1 <= k <= vocab_size]:
        raise SystemExit(f"--sizes {bad} outside 1..{vocab_size} (the target vocabulary)")
    other, d, shipped_d2t = draft_weights(args.draft)  # first: a bad --draft fails before the target runs
    train = count_loss_tokens(truncated(args.data, args.max_length), vocab_size)
    held = heldout_top1_counts(args.heldout, target, args.max_length, vocab_size)
    rows = []
    for k in sorted(args.sizes):
        d2t = select_draft_vocab(train, k)
        rows.append(
            {
                "size": k,
                "heldout_top1_coverage": vocab_coverage(held, d2t),
                "train_token_coverage": vocab_coverage(train, d2t),
                "lm_head_weights": k * d,
                "draft_weights": other + k * d,
                "bf16_mb": round(2 * (other + k * d) / 1e6, 1),
                "same_as_draft": k == shipped_d2t.numel() and bool(torch.equal(d2t, shipped_d2t)),
            }
        )
    result = {
        **harness.provenance("vocab_coverage"),
        "target": str(target),
        "data": str(args.data),
        "heldout": str(args.heldout),
        "draft": str(args.draft),
        "train_loss_tokens": int(train.sum()),
        "heldout_scored_positions": int(held.sum()),
        "results": rows,
    }
    write(args.out, result)
    print(json.dumps(rows, indent=1))


def write(out: Path, result: dict) -> None:
    """JSON with provenance, a markdown table and coverage against lm_head size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    harness.write_json(out, result)
    rows = result["results"]
    header = [
        "draft vocab",
        "held-out top-1 coverage",
        "training-token coverage",
        "lm_head weights (M)",
        "draft weights (M)",
        "bf16 MB",
        "= shipped d2t",
    ]
    table = [
        [
            r["size"],
            r["heldout_top1_coverage"],
            r["train_token_coverage"],
            round(r["lm_head_weights"] / 1e6, 2),
            round(r["draft_weights"] / 1e6, 2),
            r["bf16_mb"],
            "yes" if r["same_as_draft"] else "-",
        ]
        for r in rows
    ]
    out.with_suffix(".md").write_text(harness.markdown_table(header, table) + "\n")
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot([r["size"] for r in rows], [r["heldout_top1_coverage"] for r in rows], "o-", label="held-out target top-1")
    ax.plot([r["size"] for r in rows], [r["train_token_coverage"] for r in rows], "s--", label="training tokens")
    ax.set(
        xscale="log",
        xlabel="draft vocabulary (ids)",
        ylabel="coverage",
        title=f"draft vocabulary coverage ({result['heldout_scored_positions']:,} held-out positions)",
    )
    ax.set_xticks([r["size"] for r in rows], [f"{r['size'] // 1024}k" for r in rows])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
